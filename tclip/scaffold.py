"""The training scaffold shared by the T-CLIP, VAE and UNet loops: logs through accelerate's trackers, and
step-named checkpoints with rotation and pickle-free extra state.

**Logs.** Every loop logs with ``accelerator.log(values, step=step)``; what receives the values is a list of trackers
built by :func:`make_trackers` and handed to ``Accelerator(log_with=...)``:

* :class:`CSVTracker` (always): one CSV per run (``step`` first, then the logged keys), which the loss-curve PNGs
  (:func:`plot_csv_curves`) and the benchmarks read. A resumed run first drops the rows past its checkpoint
  (:meth:`CSVTracker.drop_rows`), so the file holds each step once, as an uninterrupted run would.
* accelerate's own TensorBoard tracker, when asked for (``report_to="tensorboard"``) and installed.

**Checkpoints.** One :class:`Checkpointer` per loop: ``accelerator.save_state`` into ``<prefix><step>`` folders
(``checkpoint-2000``; T-CLIP: ``step-100`` per stage), the loop's own state as JSON and safetensors, and last a
``checkpoint.json`` marker, so that a resume takes the newest *complete* checkpoint; the oldest are removed beyond a
limit (:func:`rotate_checkpoints`) after the new one is whole, as diffusers' training scripts do with
``checkpoints_total_limit``. Not accelerate's automatic naming (``ProjectConfiguration(
automatic_checkpoint_naming=True, total_limit=N)``): its folders are numbered by save count, not by step, and the
step is what a resume, the steps-vs-quality curve (``python -m thermgen.bench.control``) and a user need. The extra
state (lr schedule, EMA) is saved beside accelerate's files as JSON and safetensors (:func:`save_extra_state`), not
through ``register_for_checkpointing``, which reloads by unpickling; accelerate loads its own files with
``weights_only=True``.

The lowest layer of the toolkit (``tclip`` imports nothing of ``thermgen``), so all three loops can use it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker

logger = logging.getLogger(__name__)

__all__ = ["CSVTracker", "Checkpointer", "checkpoint_step", "csv_tracker", "flat_settings", "list_checkpoints", "load_extra_state", "make_trackers", "plot_csv_curves", "plot_rows",
           "read_csv_log", "rotate_checkpoints", "save_extra_state", "tracker_config"]


def read_csv_log(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV log; numbers come back as float (``step`` as int), other cells as text. No file: ``[]``."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for k, v in row.items():
                try:
                    parsed[k] = int(v) if k == "step" else float(v)
                except (TypeError, ValueError):
                    parsed[k] = v
            out.append(parsed)
    return out


class CSVTracker(GeneralTracker):
    """An accelerate tracker that appends each ``accelerator.log`` call to ``logging_dir/filename`` as one CSV row.

    The columns are ``step`` and the keys of the first row logged (or of the file's header when it already holds
    rows); a later row with a key outside them is an error naming it, since a CSV cannot grow a column midway.
    ``store_init_configuration`` writes the run's settings to ``<filename stem>.config.json`` beside it.
    """

    name = "csv"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | Path, filename: str = "train_log.csv", *, fresh: bool = True):
        super().__init__()
        self.run_name = run_name
        self.path = Path(logging_dir) / filename
        self.fresh = fresh
        self.rows_logged = 0
        self._fields: list[str] | None = None
        self._started = False

    @property
    def tracker(self) -> Path:
        return self.path

    def start(self) -> None:
        """Called by ``init_trackers`` (accelerate >= 1.8; before that, by the first :meth:`log` / :meth:`drop_rows`):
        a fresh run removes an old file, a resumed one reads its header."""
        if self._started:
            return
        self._started = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fresh:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():
            with self.path.open(newline="") as f:
                self._fields = next(csv.reader(f), None)

    def store_init_configuration(self, values: Mapping[str, Any]) -> None:
        self.path.with_suffix(".config.json").write_text(json.dumps(dict(values), indent=2, default=str) + "\n")

    def log(self, values: Mapping[str, Any], step: int | None = None, **kwargs) -> None:
        self.start()
        row = {"step": step, **values}
        if self._fields is None:
            self._fields = list(row)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        extra = [k for k in row if k not in self._fields]
        if extra:
            raise ValueError(f"{self.path}: logged key(s) {extra} are not columns of this log ({self._fields})")
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields).writerow(row)
        self.rows_logged += 1

    def drop_rows(self, drop: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the rows for which ``drop(row)`` is true (a resumed run: those past its checkpoint); returns how
        many. Call after ``init_trackers``."""
        self.start()
        rows = read_csv_log(self.path)
        keep = [r for r in rows if not drop(r)]
        if len(keep) != len(rows):
            with self.path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self._fields or list(rows[0]))
                w.writeheader()
                w.writerows(keep)
        return len(rows) - len(keep)


def flat_settings(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested settings mapping as ``{"a.b.c": value}`` (an empty mapping stays a value)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flat_settings(v, key) if isinstance(v, Mapping) and v else {key: v})
    return out


def tracker_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A run's settings as trackers store hyperparameters: flat ``a.b`` keys, scalar values (others as text)."""
    return {k: v if isinstance(v, (bool, int, float, str)) or v is None else json.dumps(v, default=str)
            for k, v in flat_settings(cfg).items()}


def make_trackers(run_name: str, logging_dir: str | Path, *, filename: str = "train_log.csv", resume: bool = False,
                  report_to: str = "csv") -> list:
    """The ``log_with`` list: a :class:`CSVTracker` (a fresh file unless ``resume``) and, for
    ``report_to="tensorboard"``, accelerate's TensorBoard tracker (logs in ``logging_dir/run_name``) when the
    ``tensorboard`` package is installed (otherwise a warning, and CSV only)."""
    from accelerate.utils import is_tensorboard_available

    if report_to not in ("csv", "tensorboard"):
        raise ValueError(f"report_to must be 'csv' or 'tensorboard', not {report_to!r}")
    trackers: list = [CSVTracker(run_name, logging_dir, filename, fresh=not resume)]
    if report_to == "tensorboard":
        if is_tensorboard_available():
            from accelerate.tracking import TensorBoardTracker

            trackers.append(TensorBoardTracker(run_name, logging_dir))
        else:
            logger.warning("report_to=tensorboard but tensorboard is not installed; CSV only")
    return trackers


def csv_tracker(accelerator) -> CSVTracker | None:
    """The accelerator's :class:`CSVTracker` (None on other processes, which hold no trackers)."""
    return next((t for t in accelerator.trackers if isinstance(t, CSVTracker)), None)


def plot_csv_curves(csv_path: str | Path, png_path: str | Path, *, y: str | Sequence[str] = "loss",
                    by: str | None = None, title: str = "training loss", ylabel: str | None = None,
                    logy: bool = False, smooth: bool = False) -> bool:
    """Curve PNG of column(s) ``y`` against ``step`` from a CSV log (:func:`plot_rows`). Returns False (and writes
    nothing) when the log has no finite rows."""
    return plot_rows(read_csv_log(csv_path), png_path, y=y, by=by, title=title, ylabel=ylabel, logy=logy,
                     smooth=smooth)


def plot_rows(rows: list[Mapping[str, Any]], png_path: str | Path, *, y: str | Sequence[str] = "loss",
              by: str | None = None, title: str = "training loss", ylabel: str | None = None, logy: bool = False,
              smooth: bool = False) -> bool:
    """The loss-curve PNG of every training loop: column(s) ``y`` of logged rows against ``step``, one line per
    column and per value of column ``by`` (e.g. the T-CLIP stage); with ``smooth`` a running mean over 1/20 of the
    points is drawn over each faint raw line. Returns False (and writes nothing) when no row has a finite value."""
    ys = [y] if isinstance(y, str) else list(y)

    def finite(r, k):
        return isinstance(r.get(k), (int, float)) and math.isfinite(r[k])

    if not any(finite(r, k) for r in rows for k in ys):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    groups = list(dict.fromkeys(r.get(by) for r in rows)) if by else [None]
    for g in groups:
        for k in ys:
            pts = [(r["step"], r[k]) for r in rows if finite(r, k) and (by is None or r.get(by) == g)]
            if not pts:
                continue
            name = " ".join(str(x) for x in ((g,) if by else ()) + ((k,) if len(ys) > 1 else ()))
            steps, vals = (np.array(v, dtype=float) for v in zip(*pts))
            if smooth and len(vals) >= 5:
                w = max(2, len(vals) // 20)
                line, = ax.plot(steps, vals, lw=0.8, alpha=0.35, label=(name + " " if name else "") + "per step")
                ax.plot(steps[w - 1:], np.convolve(vals, np.ones(w) / w, mode="valid"), lw=1.6, color=line.get_color(),
                        label=(name + " " if name else "") + f"mean of {w}")
            else:
                ax.plot(steps, vals, lw=1, marker="." if len(pts) < 30 else None, label=name or None)
    ax.set_xlabel("step" + (f" (per {by})" if by else ""))
    ax.set_ylabel(ylabel or (ys[0] if len(ys) == 1 else "loss"))
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    if any(not str(h.get_label()).startswith("_") for h in ax.get_lines()):
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------- checkpoints
def checkpoint_step(path: Path, prefix: str = "checkpoint-") -> int:
    """The step of a ``<prefix><step>`` checkpoint folder."""
    return int(Path(path).name[len(prefix):])


def list_checkpoints(ckpt_dir: Path, prefix: str = "checkpoint-") -> list[Path]:
    """``<prefix><step>`` folders in ``ckpt_dir``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [d for d in ckpt_dir.iterdir() if d.is_dir() and d.name.startswith(prefix)
             and d.name[len(prefix):].isdigit()]
    return sorted(found, key=lambda d: checkpoint_step(d, prefix))


def rotate_checkpoints(ckpt_dir: Path, limit: int | None, prefix: str = "checkpoint-", *,
                       only: Callable[[Path], bool] | None = None, keep: Path | None = None) -> list[Path]:
    """Delete the oldest checkpoints so that one more save keeps at most ``limit``; returns what was removed.
    ``only``: count and remove just the checkpoints it accepts (the complete ones); ``keep``: never remove this one
    (the checkpoint just written)."""
    if limit is None:
        return []
    ckpts = [c for c in list_checkpoints(ckpt_dir, prefix) if only is None or only(c)]
    removed = [c for c in ckpts if c != keep][:max(0, len(ckpts) - limit + 1)]
    for d in removed:
        shutil.rmtree(d)
    return removed


def save_extra_state(ckpt: Path, lr_scheduler, ema) -> None:
    """Save the lr schedule (JSON; none when ``lr_scheduler`` is None) and the EMA (JSON + safetensors) beside
    accelerate's state.

    Not through ``register_for_checkpointing``: accelerate reloads such objects by unpickling them
    (weights_only disabled); JSON and safetensors load without any unpickling.
    """
    from safetensors.torch import save_file

    if lr_scheduler is not None:
        sched = {k: v for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"}
        (ckpt / "lr_scheduler.json").write_text(json.dumps(sched))
    if ema is not None:
        sd = ema.state_dict()
        save_file({f"shadow.{i}": t.detach().cpu().contiguous() for i, t in enumerate(sd["shadow_params"])},
                  str(ckpt / "ema.safetensors"))
        (ckpt / "ema.json").write_text(json.dumps({k: v for k, v in sd.items() if k != "shadow_params"}))


def load_extra_state(ckpt: Path, lr_scheduler, ema) -> None:
    """Restore what :func:`save_extra_state` wrote; a missing file is an error naming it."""
    from safetensors.torch import load_file

    f = ckpt / "lr_scheduler.json"
    if lr_scheduler is not None:
        if not f.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} lacks {f.name} (not written by this trainer?)")
        state = json.loads(f.read_text())
        state["lr_lambdas"] = [None] * len(lr_scheduler.lr_lambdas)
        lr_scheduler.load_state_dict(state)
    if ema is not None:
        if not (ckpt / "ema.safetensors").is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} has no ema.safetensors but this run keeps an EMA")
        tensors = load_file(str(ckpt / "ema.safetensors"))
        sd = json.loads((ckpt / "ema.json").read_text())
        dev = ema.shadow_params[0].device if ema.shadow_params else "cpu"
        sd["shadow_params"] = [tensors[f"shadow.{i}"].to(dev) for i in range(len(tensors))]
        ema.load_state_dict(sd)


#: Written last into a checkpoint folder by :meth:`Checkpointer.save`: its presence marks the checkpoint complete.
CHECKPOINT_MARKER = "checkpoint.json"
#: The loop's own tensors in a checkpoint (generator states and the like), beside accelerate's files.
CHECKPOINT_TENSORS = "loop_state.safetensors"


class Checkpointer:
    """The checkpoints of one training loop (T-CLIP per stage, VAE, UNet): one way to save, rotate, find and resume.

    ``save(step, meta, tensors)`` writes ``<folder>/<prefix><step>/``: accelerate's ``save_state`` (model, optimizer,
    RNG, and anything prepared), the lr schedule and EMA when given (:func:`save_extra_state`: JSON and safetensors),
    the loop's ``tensors`` (``loop_state.safetensors``) and last ``checkpoint.json`` (``{"step": step, **meta}``),
    whose presence marks the checkpoint complete, once every process has written its part. Only then are the
    oldest complete checkpoints removed beyond ``limit`` (so a save needs room for ``limit + 1`` on disk for a
    moment), and a crash while saving leaves the previous ones whole. Folders without the marker (an interrupted
    save, or a checkpoint of an older thermgen) are never resumed from nor counted; they are left in place, with a
    warning. ``find(resume)`` resolves ``True``/``"latest"`` to the
    newest complete checkpoint (None when there is none) and a path to that folder (an error naming it when it is
    missing or incomplete); ``load(path)`` restores everything and returns ``(step, meta, tensors)``. Nothing is
    unpickled: accelerate loads its own files with ``weights_only=True``."""

    def __init__(self, accelerator, folder: str | Path, *, prefix: str = "checkpoint-", limit: int | None = None,
                 lr_scheduler=None, ema=None):
        self.accelerator = accelerator
        self.folder = Path(folder)
        self.prefix = prefix
        self.limit = limit
        self.lr_scheduler = lr_scheduler
        self.ema = ema

    def path(self, step: int) -> Path:
        return self.folder / f"{self.prefix}{step}"

    def complete(self) -> list[Path]:
        """The complete checkpoints (with their marker), oldest first."""
        return [c for c in list_checkpoints(self.folder, self.prefix) if (c / CHECKPOINT_MARKER).is_file()]

    def incomplete(self) -> list[Path]:
        """Checkpoint folders without the marker: interrupted saves, or checkpoints of an older thermgen."""
        return [c for c in list_checkpoints(self.folder, self.prefix) if not (c / CHECKPOINT_MARKER).is_file()]

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def find(self, resume: bool | str | Path | None) -> Path | None:
        if resume is None or resume is False:
            return None
        if resume is True or resume == "latest":
            stale = self.incomplete()
            if stale:
                logger.warning("%s: %d checkpoint folder(s) without %s (an interrupted save, or written by an older "
                               "thermgen) cannot be resumed from and are ignored: %s", self.folder, len(stale),
                               CHECKPOINT_MARKER, ", ".join(p.name for p in stale))
            return self.latest()
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume: checkpoint folder {path} does not exist")
        if not (path / CHECKPOINT_MARKER).is_file():
            raise FileNotFoundError(f"--resume: {path} is not a complete checkpoint (no {CHECKPOINT_MARKER}: "
                                    "its save was interrupted, or an older thermgen wrote it)")
        return path

    def save(self, step: int, meta: Mapping[str, Any] | None = None,
             tensors: Mapping[str, Any] | None = None) -> Path:
        acc = self.accelerator
        path = self.path(step)
        if acc.is_main_process and path.exists():  # the same step saved again (after a resume): no stale files
            shutil.rmtree(path)
        acc.wait_for_everyone()
        acc.save_state(str(path))
        acc.wait_for_everyone()  # every process's part (its RNG state) is on disk before the marker says so
        if acc.is_main_process:
            if self.lr_scheduler is not None or self.ema is not None:
                save_extra_state(path, self.lr_scheduler, self.ema)
            if tensors:
                from safetensors.torch import save_file

                save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, str(path / CHECKPOINT_TENSORS))
            tmp = path / (CHECKPOINT_MARKER + ".tmp")
            tmp.write_text(json.dumps({"step": int(step), **(meta or {})}))
            tmp.replace(path / CHECKPOINT_MARKER)
            if self.limit is not None:  # the oldest complete ones beyond the limit, never the one just written
                rotate_checkpoints(self.folder, self.limit + 1, self.prefix,
                                   only=lambda c: (c / CHECKPOINT_MARKER).is_file(), keep=path)
        acc.wait_for_everyone()
        return path

    @staticmethod
    def meta(path: str | Path) -> dict[str, Any]:
        """What :meth:`save` wrote into the checkpoint's marker (``step`` and the loop's ``meta``), read without
        loading anything: a loop checks that a checkpoint belongs to its run before it resumes from it."""
        marker = Path(path) / CHECKPOINT_MARKER
        if not marker.is_file():
            raise FileNotFoundError(f"resume: {path} is not a complete checkpoint (no {CHECKPOINT_MARKER})")
        return json.loads(marker.read_text())

    def load(self, path: str | Path) -> tuple[int, dict[str, Any], dict[str, Any]]:
        path = Path(path)
        meta = self.meta(path)
        self.accelerator.load_state(str(path))
        if self.lr_scheduler is not None or self.ema is not None:
            load_extra_state(path, self.lr_scheduler, self.ema)
        tensors: dict[str, Any] = {}
        if (path / CHECKPOINT_TENSORS).is_file():
            from safetensors.torch import load_file

            tensors = load_file(str(path / CHECKPOINT_TENSORS))
        return int(meta["step"]), meta, tensors
