"""The recipe runner behind ``python -m thermgen.train``: data -> captions -> T-CLIP -> VAE -> UNet -> evaluation.

Each stage reads the previous stages' outputs from the run folder and writes its own::

    RUN/config.yaml                  the resolved config of the last invocation
    RUN/data/                        synthetic scenes (data.source = synthetic only)
    RUN/manifest.jsonl               IR-Cap captions of every split (+ manifest.report.json/.md)
    RUN/tclip/                       T-CLIP folder (tclip.load)
    RUN/vae/                         AutoencoderKL (1-channel, trained here unless vae.pretrained)
    RUN/unet/                        UNet training: cache, checkpoints/, logs/, loss_curve.png, validation/
    RUN/pipeline/                    the ThermalDiffusionPipeline folder (from_pretrained-loadable)
    RUN/ablation/                    the same UNet training conditioned on the base (un-adapted) text tower
    RUN/eval/                        generated test images of both pipelines
    RUN/reports/                     recipe.json/.md (stage times, peak memory), data.json, samples.png,
                                     generation.json/.md (with the ablation row), contrast.json/.md/.png
    RUN/.stages/<stage>.json         completion markers

**Skipping.** A stage is complete when its marker exists, names the same *stage hash* and its outputs
exist. The stage hash covers the config the stage reads plus the markers of the stages it depends on,
so a changed key reruns exactly the stages that read it and everything downstream. ``--rerun STAGE``
forces a stage (and so its dependants).

**Processes.** The training stages (T-CLIP, VAE, UNet, ablation UNet) each run in fresh processes: this runner
prepares a stage (folders; for a UNet, the training cache of latents and prompt states), launches its training loop
(``python -m tclip.train`` or ``python -m thermgen.train.worker``; under ``torch.distributed.run`` when
``run.num_processes`` / ``--num-processes`` is above 1: gloo DDP on CPU, NCCL on GPUs) and packages the result.
Batch sizes in the config are global batches that the processes share, so the loss curves do not depend on the
number of processes (tested on CPU within float tolerance). No accelerate state crosses stages.

**Resume.** ``--resume`` continues an interrupted VAE, T-CLIP or UNet training (main or ablation) from its newest
``save_state`` checkpoint when the checkpoint was written under the same stage hash; without it an
incomplete stage starts over.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from thermgen.train.config import config_hash, dump_yaml
from thermgen.train.config import vae_train_config as vae_config  # the VAE stage's settings (recipe keys filled in)

logger = logging.getLogger("thermgen.train")

MARKER_DIR = ".stages"

# Contrast prompts in IR-Cap's phrasing (the captions the models are trained on). Each pair is compared with
# the real images that match it (time of day from metadata; object counts from the annotations).
CONTRAST_PROMPTS = {
    "day": ("An infrared thermal image of a road scene during the day in clear weather, seen from 60 m.",
            "Thermal infrared image of a daytime scene: broad warm patches cover the ground."),
    "night": ("An infrared thermal image of a road scene at night in clear weather, seen from 60 m.",
              "Thermal infrared image at night: the ground is cool and warm objects stand out against it."),
    "many_cars": ("An infrared thermal image of a parking lot seen from 60 m, showing twelve cars in rows across "
                  "the frame.",
                  "Thermal infrared image: twelve cars in rows across the frame are warmer than their surroundings."),
    "few_people": ("An infrared thermal image of a road seen from 60 m, showing two people near the centre.",
                   "Thermal infrared image: two people near the centre are warmer than their surroundings, body heat."),
}


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB (Linux ru_maxrss is KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024.0, 1)


# --------------------------------------------------------------------------------------------------
# Training stages run in their own processes
# --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stage_command(module_args: list[str], num_processes: int) -> list[str]:
    """The command line that runs ``python -m MODULE ARGS`` on ``num_processes`` data-parallel processes.

    One process: the module itself. More: ``torch.distributed.run`` (torchrun) on this machine, which accelerate
    inside reads as multi-CPU DDP over gloo, or multi-GPU over NCCL when CUDA is present. (``accelerate launch
    --cpu --num_processes N`` expects mpirun and starts a single process.)"""
    import sys

    if num_processes <= 1:
        return [sys.executable, "-m", *module_args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", *module_args]


def launch_stage(ctx: "Context", module_args: list[str], what: str, log: Path) -> None:
    """Run one training stage's loop in fresh processes (``run.num_processes`` of them) and wait for it.

    A fresh process per stage starts with no accelerate state, so stages may differ in mixed precision or device,
    and the same command runs data-parallel. The children import the same thermgen as this process and inherit its
    environment; their output streams to this terminal and is kept in ``log`` (a failure raises, naming both)."""
    import subprocess
    import sys

    n = int(ctx.cfg["run"]["num_processes"])
    cmd = stage_command(module_args, n)
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])  # the checkout (or site-packages) this thermgen came from
    if here not in sys.path[1:]:
        env["PYTHONPATH"] = os.pathsep.join([here, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    threads = ctx.cfg["run"]["threads"]
    if threads:
        env["OMP_NUM_THREADS"] = str(max(1, threads // n))
    elif n > 1 and "OMP_NUM_THREADS" not in env:  # torchrun would pin every process to one thread
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    logger.info("%s: %s (output also in %s)", what, " ".join(cmd), log)
    log.parent.mkdir(parents=True, exist_ok=True)
    tail = b""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc, open(log, "wb") as fh:
        # raw bytes as they come, so progress bars keep redrawing in place (\r) instead of becoming lines
        out = getattr(sys.stderr, "buffer", None)
        while chunk := proc.stdout.read1(1 << 16):
            if out is not None:
                out.write(chunk)
            else:  # a text-only stream (some embedding hosts)
                sys.stderr.write(chunk.decode(errors="replace"))
            sys.stderr.flush()
            fh.write(chunk)
            tail = (tail + chunk)[-4000:]
        rc = proc.wait()
    if rc:
        last = tail.decode(errors="replace").replace("\r", "\n").splitlines()[-20:]
        raise RuntimeError(f"stage {what} failed (exit status {rc}): {' '.join(cmd)}; its output is in {log}; last "
                           "lines:\n" + "\n".join(last))


def run_worker(ctx: "Context", stage: str, work: Path, *, mode: str | None = None, resume: str | None = None) -> dict:
    """Train the ``vae`` or a ``unet`` stage in ``thermgen.train.worker`` processes and return the loop's report.

    Everything the children need goes into ``work/worker_spec.json`` (the config as this process holds it, the
    folders, the stage hash, resume): a launch depends on no other file of the run."""
    spec = {"stage": stage, "run": str(ctx.run), "work": str(work), "mode": mode, "resume": resume,
            "progress": ctx.progress, "hash": ctx.current_hash, "cfg": ctx.cfg,
            "report": str(work / "worker_report.json")}
    work.mkdir(parents=True, exist_ok=True)
    (work / "worker_spec.json").write_text(json.dumps(spec, indent=1, default=str))
    (work / "worker_report.json").unlink(missing_ok=True)
    launch_stage(ctx, ["thermgen.train.worker", "--spec", str(work / "worker_spec.json")], stage,
                 work / "logs" / "worker.log")
    return json.loads((work / "worker_report.json").read_text())


# --------------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------------
@dataclass
class Context:
    cfg: dict
    run: Path
    resume: bool = False
    progress: bool = True
    tokens: dict[str, str] = field(default_factory=dict)  # stage -> token of its completed marker
    reports: dict[str, Any] = field(default_factory=dict)
    current_hash: str = ""  # hash of the stage now running (UNet stages stamp their checkpoints with it)

    @property
    def manifest(self) -> Path:
        return self.run / "manifest.jsonl"

    @property
    def reports_dir(self) -> Path:
        return self.run / "reports"

    @property
    def data_root(self) -> Path:
        d = self.cfg["data"]
        return self.run / "data" if d["source"] == "synthetic" else Path(d["root"]).expanduser()

    @property
    def tclip_dir(self) -> Path:
        return Path(self.cfg["tclip"]["dir"]).expanduser() if self.cfg["tclip"]["dir"] else self.run / "tclip"

    @property
    def vae_dir(self) -> Path:
        return self.run / "vae"

    @property
    def device(self) -> str:
        d = self.cfg["run"]["device"]
        return ("cuda" if torch.cuda.is_available() else "cpu") if d == "auto" else d


@dataclass(frozen=True)
class Stage:
    """One recipe stage: what config it reads, what it depends on, what it writes, how it runs."""

    name: str
    deps: tuple[str, ...]
    config: Callable[[dict], Any]
    outputs: Callable[[Context], list[Path]]
    run: Callable[[Context], dict]
    enabled: Callable[[dict], bool] = lambda cfg: True


#: What the training stages read of a record (its image and captions): the rest (measurements, objects) is most of
#: a record's memory, about 40 KB each once parsed, so a 20,000-image manifest held whole took 770 MB.
TRAINING_FIELDS = ("id", "split", "image", "global_caption", "fine_caption", "caption_variants")


def _records(ctx: Context, split: str, fields: tuple[str, ...] | None = None) -> list[dict]:
    """The manifest's records of ``split`` (sorted by id), read line by line and validated; with ``fields``, only
    those keys of each, so that memory grows with what a stage uses, not with the whole manifest."""
    from thermgen.ircap.manifest import iter_manifest

    recs = [r if fields is None else {k: r[k] for k in fields if k in r}
            for _, r in iter_manifest(ctx.manifest) if r["split"] == split]
    return sorted(recs, key=lambda r: r["id"])


def _image_paths(ctx: Context, recs: list[dict]) -> list[Path]:
    from thermgen.ircap.manifest import resolve_image

    return [resolve_image(r, ctx.manifest) for r in recs]


def _load(ctx: Context, recs: list[dict]) -> torch.Tensor:
    """Images of manifest records, float (N, 1, R, R) in [0, 1]: the pixels both the VAE and the UNet see."""
    from thermgen.train.vae import load_images

    return load_images(_image_paths(ctx, recs), ctx.cfg["train"]["resolution"], center_crop=False)


def _train_records(ctx: Context, fields: tuple[str, ...] | None = None) -> list[dict]:
    recs = _records(ctx, ctx.cfg["data"]["train_split"], fields)
    cap = ctx.cfg["data"]["max_train_images"]
    if not recs:
        raise ValueError(f"config key 'data.train_split': no {ctx.cfg['data']['train_split']!r} records in {ctx.manifest}")
    return recs[:cap] if cap else recs


def _subset(recs: list[dict], k: int | None) -> list[dict]:
    """At most ``k`` records spread evenly over the (id-sorted) list; deterministic."""
    if k is None or len(recs) <= k:
        return recs
    idx = np.linspace(0, len(recs) - 1, k).round().astype(int)
    return [recs[i] for i in idx]


# ---- data ----------------------------------------------------------------------------------------
def run_data(ctx: Context) -> dict:
    from thermgen.data import load_samples

    d = ctx.cfg["data"]
    if d["source"] == "synthetic":
        from thermgen.data.synthetic import generate

        generate(out=ctx.data_root, n=d["synthetic_n"], size=d["synthetic_size"], seed=ctx.cfg["run"]["seed"],
                 progress=ctx.progress)
    samples, skipped = load_samples(d["source"], ctx.data_root, split=None, skip_invalid=d["skip_invalid"])
    if not samples:
        raise ValueError(f"config key 'data.root': no samples of source {d['source']!r} under {ctx.data_root}")
    by_split: dict[str, int] = {}
    tod: dict[str, dict[str, int]] = {}
    for s in samples:
        by_split[s.split] = by_split.get(s.split, 0) + 1
        t = tod.setdefault(s.split, {})
        k = s.meta.get("time_of_day", "unknown")
        t[k] = t.get(k, 0) + 1
    for key in ("train_split", "val_split", "test_split"):
        if d[key] not in by_split:
            raise ValueError(f"config key 'data.{key}': split {d[key]!r} not found; the data has {sorted(by_split)}")
    rep = {"source": d["source"], "root": str(ctx.data_root), "images": len(samples), "by_split": by_split,
           "time_of_day": tod, "skipped": skipped.to_dict()}
    _write_json(ctx.reports_dir / "data.json", rep)
    if skipped.total:
        logger.warning("data: %s", skipped.summary())
    return rep


# ---- captions ------------------------------------------------------------------------------------
def run_captions(ctx: Context) -> dict:
    from thermgen.ircap.captioner import caption_samples
    from thermgen.data import load_samples

    d, c = ctx.cfg["data"], ctx.cfg["captions"]
    samples, skipped = load_samples(d["source"], ctx.data_root, split=None, skip_invalid=d["skip_invalid"])
    rep = caption_samples(samples, ctx.manifest, backend=c["backend"], seed=c["seed"], progress=ctx.progress,
                          skip_report=skipped.to_dict(), variants=c["variants"], skip_invalid=d["skip_invalid"],
                          terse_variants=c["terse_variants"])
    return {"records": rep["summary"]["records"], "skipped": (rep.get("skipped") or {}).get("total", 0),
            "report": str(ctx.manifest.with_name(ctx.manifest.stem + ".report.json")), "seconds": rep.get("elapsed_s")}


# ---- T-CLIP --------------------------------------------------------------------------------------
def tclip_argv(ctx: Context) -> list[str]:
    d = ctx.cfg["data"]
    argv = ["--manifest", str(ctx.manifest), "--out", str(ctx.run / "tclip"), "--split", d["train_split"],
            "--seed", str(ctx.cfg["run"]["seed"]), "--config", str(write_tclip_config(ctx))]
    if ctx.cfg["run"]["device"] == "cpu":
        argv.append("--cpu")
    if not ctx.progress:
        argv.append("--no-progress")
    if ctx.cfg["train"]["report_to"] != "csv":
        argv += ["--report-to", ctx.cfg["train"]["report_to"]]
    return argv


def write_tclip_config(ctx: Context) -> Path:
    """The T-CLIP stage's resolved training config (tclip.config + tclip.train) as the JSON file tclip.train reads."""
    from thermgen.train.config import tclip_train_config

    path = ctx.run / MARKER_DIR / "tclip_train_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tclip_train_config(ctx.cfg), indent=1) + "\n")
    return path


def _tclip_stage_config(c: dict) -> list:
    """What the T-CLIP stage reads: the seed and the resolved training config (speed/memory keys left out), so an
    edited tclip/train_configs file reruns it too."""
    if c["tclip"]["dir"]:
        return [c["tclip"]["dir"], tclip_folder_digest(Path(c["tclip"]["dir"]).expanduser())]
    from tclip.train import result_settings

    from thermgen.train.config import tclip_train_config

    return [c["run"]["seed"], result_settings(tclip_train_config(c))]


def tclip_folder_digest(folder: Path) -> str | None:
    """Content hash of a given T-CLIP folder (``tclip.dir``): its JSON and safetensors files outside ``checkpoints/``
    and ``logs/`` (the config with the fusion alpha, the base weights, both adapters). A T-CLIP retrained or re-fused
    in place therefore reruns the stages conditioned on it; a copy of the folder elsewhere does not. Base weights
    that the config names outside the folder are not covered. None when the folder has no ``tclip_config.json``
    (the stage then fails, naming it)."""
    from thermgen.metrics.features import folder_sha256

    if not (folder / "tclip_config.json").is_file():
        return None
    return folder_sha256(folder, suffixes=(".json", ".safetensors"), skip_dirs=("checkpoints", "logs"))[:16]


def run_tclip(ctx: Context) -> dict:
    if ctx.cfg["tclip"]["dir"]:
        import tclip

        tclip.load(ctx.tclip_dir)  # fails early, naming the folder, if it is not a T-CLIP folder
        return {"dir": str(ctx.tclip_dir), "trained": False}
    argv = tclip_argv(ctx)
    # --resume continues a T-CLIP folder written under this stage hash (config and captions) only
    stamp = ctx.run / MARKER_DIR / "tclip.stage_hash"
    same_stage = stamp.is_file() and stamp.read_text().strip() == ctx.current_hash
    if ctx.resume and same_stage and (ctx.run / "tclip").exists():
        argv.append("--resume")
    elif (ctx.run / "tclip").exists():
        if ctx.resume:
            logger.warning("--resume: %s was written under another config or other captions; T-CLIP starts over",
                           ctx.run / "tclip")
        shutil.rmtree(ctx.run / "tclip")  # a stale T-CLIP from another config: this stage starts over
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(ctx.current_hash + "\n")
    launch_stage(ctx, ["tclip.train", *argv], "tclip", ctx.run / "logs" / "tclip.log")
    return {"dir": str(ctx.tclip_dir), "trained": True, "argv": argv,
            "num_processes": ctx.cfg["run"]["num_processes"]}


# ---- VAE -----------------------------------------------------------------------------------------
def train_vae_stage(ctx: Context, resume: str | None) -> dict:
    """The VAE stage's training, on every process of a launch (thermgen.train.worker)."""
    from thermgen.train.vae import train_vae

    d = ctx.cfg["data"]
    # the files, which train_vae keeps in memory within vae.train.image_cache_mb and streams beyond it
    train = _image_paths(ctx, _train_records(ctx, TRAINING_FIELDS))
    val = _image_paths(ctx, _records(ctx, d["val_split"], TRAINING_FIELDS))
    return train_vae(vae_config(ctx.cfg), train, val, ctx.vae_dir, cpu=ctx.device == "cpu", show_progress=ctx.progress,
                     resume=resume or False, report_to=ctx.cfg["train"]["report_to"])


def run_vae(ctx: Context) -> dict:
    from thermgen.train.vae import resumable_checkpoint

    # --resume continues a checkpoint written under this stage hash (config and upstream data) only.
    stamp = ctx.vae_dir / "stage_hash.txt"
    same_stage = stamp.is_file() and stamp.read_text().strip() == ctx.current_hash
    ckpt = resumable_checkpoint(ctx.vae_dir, vae_config(ctx.cfg)) if ctx.resume and same_stage else None
    if ctx.resume and ckpt is None and ctx.vae_dir.exists():
        logger.warning("--resume: %s holds no VAE checkpoint of this stage; the VAE stage starts over", ctx.vae_dir)
    if ctx.vae_dir.exists() and ckpt is None:
        shutil.rmtree(ctx.vae_dir)
    ctx.vae_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(ctx.current_hash + "\n")
    return run_worker(ctx, "vae", ctx.vae_dir, resume=str(ckpt) if ckpt else None)


# ---- attribute judge -----------------------------------------------------------------------------
def _judge_version() -> list:
    from thermgen.metrics.attributes import JUDGE_SCHEMA_VERSION, AttributeJudge

    return [JUDGE_SCHEMA_VERSION, list(AttributeJudge.L2_GRID), "inception", "held-out-flights"]


def judge_dir(ctx: Context) -> Path:
    return ctx.run / "judge"


def feature_cache(ctx: Context) -> Path:
    return ctx.run / "eval" / "cache"


def run_judge(ctx: Context) -> dict:
    """The attribute judge on the real splits (thermgen.metrics.judging.train_judge); its ceiling goes to reports/judge.md.

    Where the train and test records come in flights (frames numbered along a recording: HIT-UAV), the ceiling on
    flights the judge never saw (thermgen.metrics.judging.held_out_flights) goes beside it, to reports/judge_flights.md
    and the generation report.
    """
    from thermgen.ircap.manifest import read_manifest
    from thermgen.metrics.attributes import flights_unusable
    from thermgen.metrics.judging import flights_markdown, held_out_flights, train_judge

    d = ctx.cfg["data"]
    rep = train_judge(ctx.manifest, judge_dir(ctx), resolution=ctx.cfg["train"]["resolution"], train_split=d["train_split"],
                      val_split=d["val_split"], test_split=d["test_split"], device=ctx.device, progress=ctx.progress,
                      cache_dir=feature_cache(ctx))
    why_not = flights_unusable([r for r in read_manifest(ctx.manifest) if r["split"] in (d["train_split"], d["test_split"])])
    framed = why_not is None
    if framed:
        flights = held_out_flights(judge_dir(ctx), ctx.manifest, train_split=d["train_split"], test_split=d["test_split"],
                                   device=ctx.device, progress=ctx.progress, cache_dir=feature_cache(ctx))
        rep["held_out_flights"] = flights["held_out_flights"]
        _write_json(ctx.reports_dir / "judge_flights.json", flights)
        (ctx.reports_dir / "judge_flights.md").write_text(flights_markdown(flights))
    else:
        (ctx.reports_dir / "judge_flights.json").unlink(missing_ok=True)
        (ctx.reports_dir / "judge_flights.md").unlink(missing_ok=True)
        logger.info("judge: no held-out-flight check: %s", why_not)
    _write_json(ctx.reports_dir / "judge.json", rep)
    shutil.copyfile(judge_dir(ctx) / "report.md", ctx.reports_dir / "judge.md")
    return {a: {"accuracy": r["accuracy"], "majority_rate": r["majority_rate"],
                **({"held_out_flights": rep["held_out_flights"][a]["accuracy"]} if framed else {})}
            for a, r in rep["ceiling"].items()}


# ---- UNet (main and ablation) --------------------------------------------------------------------
def _caption_kinds(mode: str) -> tuple[str, ...]:
    """The captions a text encoder mode reads: (prompt kind,) or (prompt kind, fine-prompt kind)."""
    return ("global", "fine") if mode in ("fused", "concat") else ("fine",) if mode == "fine" else ("global",)


def _prompts_for_mode(mode: str, recs: list[dict]) -> tuple[list[str], list[str] | None]:
    """(prompts, fine prompts) as the text encoder's mode consumes them."""
    lists = [[r[f"{kind}_caption"] for r in recs] for kind in _caption_kinds(mode)]
    return (lists[0], lists[1]) if len(lists) == 2 else (lists[0], None)


def _variants_for_mode(mode: str, recs: list[dict]) -> tuple[list[list[str]], list[list[str]] | None]:
    """Each record's other phrasings (``caption_variants``, thermgen.caption --variants) as the mode consumes them."""
    kinds = _caption_kinds(mode)
    for kind in kinds:
        missing = [r["id"] for r in recs if not (r.get("caption_variants") or {}).get(kind)]
        if missing:
            raise ValueError(f"train.caption_variants: {len(missing)} training records have no caption_variants."
                             f"{kind} (first: {missing[0]}); set captions.variants > 0")
    lists = [[r["caption_variants"][kind] for r in recs] for kind in kinds]
    if len(lists) == 2:  # terse global variants (captions.terse_variants) have no fine twin: pair them with the
        # record's fine variants in turn, so that both lists hold as many phrasings
        lists[1] = [[f[k % len(f)] for k in range(len(g))] for g, f in zip(*lists)]
    return (lists[0], lists[1]) if len(lists) == 2 else (lists[0], None)


def load_text_encoder(ctx: Context, mode: str):
    from tclip.text_encoder import TCLIPTextEncoder

    return TCLIPTextEncoder.from_tclip(ctx.tclip_dir, mode=mode, alpha=ctx.cfg["unet"]["fusion_alpha"])


def load_vae(ctx: Context):
    from pipelines.patch_autoencoder import load_thermal_vae

    return load_thermal_vae(ctx.vae_dir)


def train_conditioned_unet(ctx: Context, mode: str, work: Path, pipeline_dir: Path, stage_hash: str) -> dict:
    """Encode the training set with the ``mode`` text encoder, train the UNet, save a pipeline folder."""
    from thermgen.train.unet import (build_pipeline, encode_mirrored, encode_training_set, encode_variants,
                                     load_cache, save_cache)

    cfg = ctx.cfg
    stamp = work / "stage_hash.txt"
    resumable = ctx.resume and stamp.is_file() and stamp.read_text().strip() == stage_hash
    if ctx.resume and not resumable and work.exists():
        logger.warning("--resume: %s was written under another config; starting this stage over", work)
    if not resumable and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(stage_hash)

    text_encoder = load_text_encoder(ctx, mode)
    vae = load_vae(ctx)
    cache_path = work / "cache.safetensors"
    if not cache_path.is_file():
        recs = _train_records(ctx, TRAINING_FIELDS)
        from thermgen.train.cache import RowStore
        from thermgen.train.vae import ImageFiles

        # Streamed from disk, and each encoded batch written to disk at once (RowStore): this process holds
        # neither the training set's pixels nor its latents and text states, whatever its size.
        images = ImageFiles(_image_paths(ctx, recs), cfg["train"]["resolution"], center_crop=False)
        prompts, fine = _prompts_for_mode(mode, recs)
        for stale in work.glob("rows-*"):  # an encoding killed before it finished
            shutil.rmtree(stale, ignore_errors=True)
        with RowStore(work) as rows:
            cache = encode_training_set(images, prompts, fine, vae, text_encoder, device=ctx.device,
                                        progress=ctx.progress, alloc=rows)
            variants = _variants_for_mode(mode, recs) if cfg["train"]["caption_variants"] else (None, None)
            if variants[0] is not None:
                cache.update(encode_variants(*variants, text_encoder, device=ctx.device, progress=ctx.progress,
                                             alloc=rows))
            if cfg["train"]["random_flip"]:
                cache.update(encode_mirrored(prompts, fine, text_encoder, variants=variants[0],
                                             variants_fine=variants[1], device=ctx.device, progress=ctx.progress,
                                             alloc=rows))
            del recs, prompts, fine, variants
            save_cache(cache, cache_path)
            del cache
    cache = load_cache(cache_path)
    latent_std = cache["latent_mean"].std()
    if not 0.3 < latent_std < 3.0:
        logger.warning("unet: scaled training latents have std %.3f (expected ~1): check the VAE scaling_factor",
                       latent_std)
    text_width, text_tokens = int(cache["text_states"].shape[-1]), int(cache["text_states"].shape[1])
    del cache
    # the parent's models leave the device before the children train (they are reloaded for the pipeline)
    del text_encoder, vae
    _release_device_memory()
    report = run_worker(ctx, "unet", work, mode=mode, resume="latest" if ctx.resume and resumable else None)
    text_encoder, vae = load_text_encoder(ctx, mode), load_vae(ctx)
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(work / "unet")
    pipe = build_pipeline(vae, unet, text_encoder, cfg)
    if pipeline_dir.exists():
        shutil.rmtree(pipeline_dir)
    pipe.save_pretrained(pipeline_dir)
    report.update({"conditioning": mode, "text_width": text_width, "text_tokens": text_tokens,
                   "latent_std": round(latent_std, 4), "pipeline": str(pipeline_dir)})
    _write_json(work / "unet_report.json", report)
    # The cache is derived data (large for big runs); the trained UNet and the pipeline are the results.
    cache_path.unlink(missing_ok=True)
    return report


def _release_device_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_unet_stage(ctx: Context, mode: str, work: Path, resume: str | None) -> dict:
    """The UNet's training on the cache the parent encoded into ``work``, on every process of a launch
    (thermgen.train.worker). ``train.train_batch_size`` is the global batch: each of N processes takes 1/N of it."""
    from thermgen.train.unet import train_unet

    return train_unet(ctx.cfg, work / "cache.safetensors", work, resume=resume or False, vae=load_vae(ctx),
                      text_encoder=load_text_encoder(ctx, mode), progress=ctx.progress)


def _load_pipeline(path: Path, device: str):
    import tclip.text_encoder  # noqa: F401  (diffusers resolves the text component's class by module name)
    from pipelines import ThermalDiffusionPipeline

    pipe = ThermalDiffusionPipeline.from_pretrained(path).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_unet(ctx: Context) -> dict:
    rep = train_conditioned_unet(ctx, ctx.cfg["unet"]["conditioning"], ctx.run / "unet", ctx.run / "pipeline",
                                 ctx.current_hash)
    rep["samples_png"] = str(write_sample_grid(ctx, ctx.run / "pipeline", ctx.cfg["unet"]["conditioning"]))
    _write_json(ctx.reports_dir / "unet.json", rep)
    return rep


def run_ablation(ctx: Context) -> dict:
    rep = train_conditioned_unet(ctx, "base", ctx.run / "ablation" / "unet", ctx.run / "ablation" / "pipeline",
                                 ctx.current_hash)
    _write_json(ctx.reports_dir / "ablation_unet.json", rep)
    return rep


def write_sample_grid(ctx: Context, pipeline_dir: Path, mode: str) -> Path:
    """reports/samples.png: for a few test captions, the real image then generated samples."""
    from thermgen.train.unet import sample_images, save_thermal_grid

    cfg = ctx.cfg
    recs = _subset(_records(ctx, cfg["data"]["test_split"]), cfg["eval"]["grid_prompts"])
    real = _load(ctx, recs)[:, 0].numpy()
    pipe = _load_pipeline(pipeline_dir, ctx.device)
    prompts, fine = _prompts_for_mode(mode, recs)
    gen = sample_images(pipe, prompts, prompts_fine=fine, n_per_prompt=4, steps=cfg["eval"]["num_inference_steps"],
                        guidance=cfg["train"]["guidance_scale"], seed=cfg["run"]["seed"],
                        resolution=cfg["train"]["resolution"])
    grid = np.concatenate([real[:, None], gen], axis=1)
    path = ctx.reports_dir / "samples.png"
    save_thermal_grid(grid, path, row_labels=[r["global_caption"] for r in recs],
                      title="test captions: real image (left), generated samples (right)")
    return path


# ---- evaluation ----------------------------------------------------------------------------------
def eval_seeds(cfg: dict) -> list[int]:
    return list(cfg["eval"]["seeds"] or [cfg["run"]["seed"]])


def _seed_base(seed: int) -> int:
    """Image ``i`` of an evaluation with seed ``s`` is generated with ``s * 1_000_003 + i`` (seed 0: ``i``)."""
    return seed * 1_000_003


def generate_prompts(ctx: Context, pipe, prompts: list[str], fine: list[str] | None, out: Path, *, seed: int,
                     record_ids: list[str] | None = None, desc: str = "generate",
                     negative: list[str] | None = None, negative_fine: list[str] | None = None,
                     contrast: list[str] | None = None, contrast_fine: list[str] | None = None,
                     contrast_scale: float = 0.0) -> Path:
    """One 16-bit PNG per prompt (``<index:05d>.png``, generated with seed ``_seed_base(seed) + index``) and a
    ``generation.json`` index (file, prompt, fine prompt, record id, seed) that thermgen.fid / thermgen.judge read.
    ``negative`` / ``negative_fine``: one negative prompt per prompt (default: the empty prompt), recorded too;
    ``contrast`` / ``contrast_fine`` with ``contrast_scale`` > 0: one contrast prompt per prompt (the pipeline's
    contrastive guidance), recorded too.

    The index also records the ``settings`` the images were made with (:func:`pipeline_fingerprint`, sampler steps,
    guidance, resolution, batch, device, library versions). A folder whose index records the same settings for the
    same prompts, fine prompts, seeds and record ids, every file present, is reused as it is (logged), so an
    evaluation that adds a row or resumes does not regenerate the rows it already has."""
    from thermgen.io import write_png16

    cfg = ctx.cfg
    batch = 16
    res = cfg["train"]["resolution"]
    settings = {"pipeline": pipeline_fingerprint(pipe), "num_inference_steps": cfg["eval"]["num_inference_steps"],
                "guidance_scale": cfg["train"]["guidance_scale"], "resolution": res, "batch": batch,
                "device": str(pipe.device), "versions": _generation_versions()}
    for name, lst in (("negative", negative), ("negative_fine", negative_fine), ("contrast", contrast),
                      ("contrast_fine", contrast_fine)):
        if lst is not None and len(lst) != len(prompts):
            raise ValueError(f"generate_prompts: {len(lst)} {name} prompts for {len(prompts)} prompts")
    if negative_fine is not None and negative is None:
        raise ValueError("generate_prompts: negative_fine needs negative")
    if contrast_fine is not None and contrast is None:
        raise ValueError("generate_prompts: contrast_fine needs contrast")
    if (contrast is None) != (contrast_scale == 0):
        raise ValueError("generate_prompts: contrast prompts and contrast_scale > 0 go together")
    if contrast_scale:
        settings["contrast_scale"] = float(contrast_scale)
    interval = cfg["eval"].get("guidance_interval")
    if interval is not None:
        settings["guidance_interval"] = [float(v) for v in interval]
    wanted = [{"prompt": p, "prompt_fine": None if fine is None else fine[i], "seed": _seed_base(seed) + i,
               "record_id": None if record_ids is None else record_ids[i]}
              | ({} if negative is None else {"negative_prompt": negative[i]})
              | ({} if negative_fine is None else {"negative_prompt_fine": negative_fine[i]})
              | ({} if contrast is None else {"contrast_prompt": contrast[i]})
              | ({} if contrast_fine is None else {"contrast_prompt_fine": contrast_fine[i]})
              for i, p in enumerate(prompts)]
    if _reusable(out, settings, wanted):
        logger.info("%s: reused %d images in %s (same pipeline weights, prompts, seeds and sampler settings)",
                    desc, len(prompts), out)
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    from tqdm.auto import tqdm

    entries = []
    for s in tqdm(range(0, len(prompts), batch), desc=desc, disable=not ctx.progress):
        idx = list(range(s, min(len(prompts), s + batch)))
        gens = [torch.Generator().manual_seed(_seed_base(seed) + i) for i in idx]
        kw = {"prompt_fine": [fine[i] for i in idx]} if fine is not None else {}
        # the per-image extras are named as the pipeline's arguments
        kw |= {k: [wanted[i][k] for i in idx] for k in _PER_IMAGE_EXTRAS if k in wanted[0]}
        if contrast is not None:
            kw["contrast_scale"] = float(contrast_scale)
        if interval is not None:
            kw["guidance_interval"] = tuple(settings["guidance_interval"])
        imgs = pipe(prompt=[prompts[i] for i in idx], num_inference_steps=cfg["eval"]["num_inference_steps"],
                    guidance_scale=cfg["train"]["guidance_scale"], generator=gens, height=res, width=res,
                    output_type="uint16", **kw).images
        for i, im in zip(idx, imgs):
            write_png16(out / f"{i:05d}.png", np.asarray(im)[..., 0])
            e = {"file": f"{i:05d}.png", "prompt": prompts[i], "seed": _seed_base(seed) + i}
            if fine is not None:
                e["prompt_fine"] = fine[i]
            if record_ids is not None:
                e["record_id"] = record_ids[i]
            e.update({k: v for k, v in wanted[i].items() if k in _PER_IMAGE_EXTRAS})
            entries.append(e)
    (out / "generation.json").write_text(json.dumps({"settings": settings, "images": entries}, indent=1))
    return out


def _generation_versions() -> dict[str, str]:
    """Versions of the code that turns weights into images (thermgen's pipeline, diffusers' samplers, torch)."""
    import diffusers

    import thermgen

    return {"thermgen": getattr(thermgen, "__version__", "unknown"), "diffusers": diffusers.__version__,
            "torch": torch.__version__}


def pipeline_fingerprint(pipe) -> str:
    """sha256 over everything of a pipeline that decides its images: each component's class, config (without
    ``_``-prefixed bookkeeping such as the folder it was loaded from) and weights (the text encoder's mode and
    fusion alpha are config). Computed afresh on every call (about 0.1 s per 30 MB of weights), since a caller may
    swap a component or change weights in place between two generations (thermgen.bench.control does)."""
    import hashlib

    h = hashlib.sha256()
    for name, comp in sorted(pipe.components.items()):
        h.update(f"{name}:{type(comp).__module__}.{type(comp).__qualname__}".encode())
        config = getattr(comp, "config", None)
        if config is not None:
            h.update(json.dumps({k: v for k, v in dict(config).items() if not str(k).startswith("_")},
                                sort_keys=True, default=str).encode())
        if isinstance(comp, torch.nn.Module):
            for key, t in sorted(comp.state_dict().items()):
                h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_PER_IMAGE_EXTRAS = {"negative_prompt", "negative_prompt_fine", "contrast_prompt", "contrast_prompt_fine"}


def _reusable(out: Path, settings: dict, wanted: list[dict]) -> bool:
    """Whether ``out`` already holds exactly these images: a ``generation.json`` written with the same settings
    (pipeline fingerprint included) for the same prompts, fine prompts, seeds and record ids, every file present."""
    try:
        index = json.loads((out / "generation.json").read_text())
    except (OSError, ValueError):
        return False
    if index.get("settings") != settings or len(index.get("images", [])) != len(wanted):
        return False
    for e, w in zip(index["images"], wanted):
        if any(e.get(k) != w.get(k) for k in set(w) | _PER_IMAGE_EXTRAS) \
                or not (out / e["file"]).is_file():
            return False
    return True


def contrast_prompts(mode: str, recs: list[dict], kind: str = "time_of_day",
                     fallback: str = "own") -> tuple[list[str], list[str] | None]:
    """The contrast prompts (and fine ones, by ``mode``) of ``recs``: each record's captions with its ``kind`` fact
    edited (:func:`thermgen.ircap.swap.contrast_captions`). A record without that fact (or whose edited captions
    state another difference too) gets its own captions
    (``fallback="own"``: as a contrast branch its term c - k is zero, so it keeps plain guidance) or the empty prompt
    (``fallback="empty"``: as the negative prompt, plain classifier-free guidance)."""
    from thermgen.ircap.swap import contrast_captions

    if fallback not in ("own", "empty"):
        raise ValueError(f"contrast_prompts: fallback must be 'own' or 'empty', got {fallback!r}")
    edited = [contrast_captions(r, kind)
              or ((r["global_caption"], r["fine_caption"]) if fallback == "own" else ("", "")) for r in recs]
    return _prompts_for_mode(mode, [{"global_caption": g, "fine_caption": f} for g, f in edited])


def contrast_kwargs(mode: str, recs: list[dict], contrast_scale: float | None) -> dict[str, Any]:
    """generate_prompts' keywords for contrastive guidance along the time of day at ``contrast_scale``
    (:func:`contrast_prompts`; none when the scale is None or 0)."""
    if not contrast_scale:
        return {}
    c, cf = contrast_prompts(mode, recs)
    return {"contrast": c, "contrast_fine": cf, "contrast_scale": float(contrast_scale)}


def generate_for_records(ctx: Context, pipeline_dir: Path, mode: str, recs: list[dict], out: Path,
                         seed: int | None = None, pipe=None, contrast_scale: float | None = None) -> Path:
    """One 16-bit PNG per record, generated from its captions (see :func:`generate_prompts`); with
    ``contrast_scale``, contrastive guidance along the time of day (:func:`contrast_kwargs`)."""
    pipe = pipe or _load_pipeline(pipeline_dir, ctx.device)
    prompts, fine = _prompts_for_mode(mode, recs)
    return generate_prompts(ctx, pipe, prompts, fine, out, seed=ctx.cfg["run"]["seed"] if seed is None else seed,
                            record_ids=[r["id"] for r in recs], desc=f"generate ({mode})",
                            **contrast_kwargs(mode, recs, contrast_scale))


def _folder_features(ctx: Context, folder: Path) -> np.ndarray:
    from thermgen.metrics.fid import list_images
    from thermgen.metrics.attributes import image_features

    return image_features(list_images(folder).files, ctx.cfg["train"]["resolution"],
                          feature="inception", device=ctx.device, progress=False)


def attribute_eval(ctx: Context, pipe, mode: str, recs: list[dict], out: Path, seed: int, images: Path,
                   feats: np.ndarray | None = None, contrast_scale: float | None = None) -> dict:
    """Judge the images generated for ``recs`` (folder ``images``, or their judge features ``feats``) and run
    the one-fact swap test, for one seed; with ``contrast_scale``, each swap side is generated with the other
    side's prompt as its contrast prompt."""
    from thermgen.ircap.swap import SWAP_KINDS, swap_pairs
    from thermgen.metrics.attributes import AttributeJudge, attribute_table, judge_images, swap_report

    judge = AttributeJudge.load(judge_dir(ctx))
    graded = judge_images(judge, _folder_features(ctx, images) if feats is None else feats, attribute_table(recs))
    swaps = {}
    for kind in SWAP_KINDS:
        pairs = swap_pairs(recs, kind, max_pairs=ctx.cfg["eval"]["swap_pairs"])
        if not pairs or kind not in judge.heads:
            continue
        prompts_of = {x: _prompts_for_mode(mode, [{"global_caption": getattr(p, f"global_{x}"),
                                                   "fine_caption": getattr(p, f"fine_{x}")} for p in pairs])
                      for x in "ab"}
        sides = []
        for side, other in (("a", "b"), ("b", "a")):
            prompts, fine = prompts_of[side]
            kw = {}
            if contrast_scale:  # the other side's prompt as this side's contrast
                c, cf = prompts_of[other]
                kw = {"contrast": c, "contrast_fine": cf, "contrast_scale": float(contrast_scale)}
            d = generate_prompts(ctx, pipe, prompts, fine, out / f"swap_{kind}_{side}", seed=seed,
                                 record_ids=[p.record_id for p in pairs], desc=f"swap {kind} {side}", **kw)
            sides.append(_folder_features(ctx, d))
        swaps[kind] = swap_report(judge, kind, sides[0], sides[1], [p.value_a for p in pairs],
                                  [p.value_b for p in pairs], real_values=[p.real_value for p in pairs])
    return {"attributes": graded, "swap": swaps}


def _mean_std_tree(runs: list[dict]) -> dict:
    """Mean ± std over seeds of the headline numbers of per-seed evaluation rows."""
    from thermgen.metrics.attributes import mean_std

    out: dict[str, Any] = {"fid": mean_std([r.get("fid") for r in runs]),
                           "kid_mean": mean_std([r.get("kid_mean") for r in runs])}
    attrs = runs[0].get("judge", {}).get("attributes", {})
    out["attributes"] = {a: {"accuracy": mean_std([r["judge"]["attributes"][a]["accuracy"] for r in runs]),
                             "balanced_accuracy": mean_std([r["judge"]["attributes"][a]["balanced_accuracy"] for r in runs]),
                             "majority_rate": attrs[a]["majority_rate"]} for a in attrs}
    swaps = runs[0].get("judge", {}).get("swap", {})
    out["swap"] = {k: {m: mean_std([r["judge"]["swap"][k][m] for r in runs])
                       for m in ("follows", "moved", "verdict_changed", "factual_correct", "edited_correct")
                       if all(m in r["judge"]["swap"][k] for r in runs)}
                   | {"pairs": swaps[k]["pairs"], "pairs_with_real_value": swaps[k].get("pairs_with_real_value")}
                   for k in swaps}
    return out


def run_evaluate(ctx: Context) -> dict:
    from thermgen.metrics import evaluate_generation
    from thermgen.metrics.attributes import mean_std

    cfg = ctx.cfg
    split = cfg["data"]["test_split"]
    recs = _subset(_records(ctx, split), cfg["eval"]["max_test_prompts"])
    g = [r["global_caption"] for r in recs]
    f = [r["fine_caption"] for r in recs]
    cs = cfg["eval"]["contrast_scale"] or None
    runs = [("tclip", cfg["unet"]["conditioning"], ctx.run / "pipeline", None)]
    if cfg["eval"]["ablation"]:
        runs.append(("base_text_tower", "base", ctx.run / "ablation" / "pipeline", None))
    if cs:  # each pipeline again with contrastive guidance along the time of day, as a row of its own
        runs = [r for name, mode, pdir, _ in runs for r in ((name, mode, pdir, None), (f"{name}+contrast", mode, pdir, cs))]
    use_judge = cfg["eval"]["judge"]
    seeds = eval_seeds(cfg)
    rows, per_seed = {}, {}
    pipe, loaded = None, None
    for name, mode, pdir, scale in runs:
        if pdir != loaded:  # a contrast row reuses its plain row's pipeline
            pipe, loaded = _load_pipeline(pdir, ctx.device), pdir
        per_seed[name] = []
        seed_feats = []
        for k, seed in enumerate(seeds):
            work = ctx.run / "eval" / name / (f"seed{seed}" if len(seeds) > 1 else "")
            fake = generate_for_records(ctx, pdir, mode, recs, work / "images", seed=seed, pipe=pipe,
                                        contrast_scale=scale)
            feature = "inception" if cfg["eval"]["feature"] == "inception" else f"tclip:{ctx.tclip_dir}"
            row = evaluate_generation(ctx.manifest, fake, g, work, feature=feature,
                                      tclip_dir=ctx.tclip_dir if k == 0 else None, split=split, prompts_fine=f,
                                      name=f"generation_{name}", device=ctx.device, progress=ctx.progress,
                                      cache_dir=feature_cache(ctx))
            row["conditioning"] = mode
            row["seed"] = seed
            if scale:
                row["contrast_scale"] = scale
            if use_judge:
                seed_feats.append(_folder_features(ctx, fake))
                row["judge"] = attribute_eval(ctx, pipe, mode, recs, work, seed, fake, feats=seed_feats[-1],
                                              contrast_scale=scale)
            per_seed[name].append(row)
        rows[name] = dict(per_seed[name][0])
        if use_judge:
            rows[name]["over_seeds"] = _mean_std_tree(per_seed[name])
            if len(seed_feats) > 1:
                from thermgen.metrics.attributes import seed_diversity

                rows[name]["over_seeds"]["seed_diversity"] = seed_diversity(seed_feats)
        elif len(seeds) > 1:
            rows[name]["over_seeds"] = {"fid": mean_std([r["fid"] for r in per_seed[name]]),
                                        "kid_mean": mean_std([r["kid_mean"] for r in per_seed[name]])}
    report = {"schema_version": 2, "split": split, "n_prompts": len(recs), "seeds": seeds, "rows": rows,
              "per_seed": {k: [{kk: vv for kk, vv in r.items() if kk in ("seed", "fid", "kid_mean", "kid_std", "judge")}
                               for r in v] for k, v in per_seed.items()},
              "conditioner": {k: v for k, v in {
                  "tclip": f"T-CLIP text encoder, mode {cfg['unet']['conditioning']!r}",
                  "base_text_tower": "T-CLIP's base text tower without adapters (mode 'base'), same UNet training",
                  "+contrast": f"the same pipeline with contrastive guidance along the time of day, weight {cs} "
                               "(each caption's IR-Cap facts with the time of day edited as the contrast prompt; "
                               "each swap side contrasted with the other)"}.items()
                  if any(n == k or n.endswith(k) for n in rows)}}
    if use_judge:
        judge_rep = json.loads((ctx.reports_dir / "judge.json").read_text())
        report["judge_ceiling"] = judge_rep["ceiling"]
        if judge_rep.get("held_out_flights"):
            report["judge_ceiling_held_out_flights"] = judge_rep["held_out_flights"]
    _write_json(ctx.reports_dir / "generation.json", report)
    (ctx.reports_dir / "generation.md").write_text(generation_markdown(report))
    return {k: {"fid": v.get("fid"), "kid_mean": v.get("kid_mean")} for k, v in rows.items()}


def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return default
        d = d[k]
    return d


def generation_markdown(report: dict) -> str:
    def fmt(v, nd=4):
        return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    rows = report["rows"]
    lines = [
        "# Generation metrics",
        "",
        f"Test split `{report['split']}`: one image per test caption ({report['n_prompts']} captions), "
        "compared with the real test images resized to the generator's resolution.",
        "",
        "| conditioner | FID | KID (mean ± std) | T-CLIP FD | T-CLIP cosine | T-CLIP R@1 (chance) | n real / fake |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        ta = _get(r, "tclip", "text_alignment") or {}
        lines.append(
            f"| {name} ({r['conditioning']}) | {fmt(r.get('fid'), 2)} | {fmt(r.get('kid_mean'))} ± {fmt(r.get('kid_std'))} | "
            f"{fmt(_get(r, 'tclip', 'fd'))} | {fmt(ta.get('cosine_mean'))} | {fmt(ta.get('r1'))} "
            f"({fmt(ta.get('r1_chance'))}) | {r.get('n_real')} / {r.get('n_fake')} |")
    if any("over_seeds" in r for r in rows.values()):
        lines += judge_markdown(report)
    lines += ["", "Conditioners: " + "; ".join(f"**{k}**: {v}" for k, v in report["conditioner"].items()) + ".",
              "", "FID/KID use the standard Inception features (RGB-trained; small sets inflate FID, so compare rows, "
              "not absolute values). T-CLIP metrics use the run's own T-CLIP, which also conditions the first row: "
              "it favours that row; the ablation isolates the text encoder, since the UNet training is identical.",
              "", "Per-row details: `RUN/eval/<conditioner>/generation_<conditioner>.md`."]
    warnings = list(dict.fromkeys(w for r in rows.values() for w in (r.get("warnings") or [])))
    lines += [f"- warning: {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def _ms(d: dict | None, nd: int = 3) -> str:
    if not d or d.get("mean") is None or d["mean"] != d["mean"]:
        return "-"
    return f"{d['mean']:.{nd}f} ± {d['std']:.{nd}f}" if d.get("n", 1) > 1 else f"{d['mean']:.{nd}f}"


def judge_markdown(report: dict) -> list[str]:
    """The attribute and swap tables of the generation report (mean ± std over the evaluation seeds)."""
    rows = report["rows"]
    seeds = report.get("seeds") or []
    ceiling = report.get("judge_ceiling") or {}
    out = ["", f"## Over seeds {seeds}: FID and attribute accuracy (attribute judge, independent of T-CLIP)", "",
           "Judge: Inception features + a linear head per attribute, trained on the real train split (labels from "
           "metadata and annotations). Each generated image is graded against the attributes of the real test image "
           "whose captions were its prompt.", ""]
    attrs = list(next(iter(rows.values())).get("over_seeds", {}).get("attributes", {}))
    if attrs:
        out += ["| conditioner | FID | " + " | ".join(attrs) + " |", "| --- | --- |" + " --- |" * len(attrs)]
        if ceiling:
            out.append("| real test images (judge ceiling) | - | " + " | ".join(
                f"{ceiling[a]['accuracy']:.3f}" if a in ceiling else "-" for a in attrs) + " |")
        flights = report.get("judge_ceiling_held_out_flights") or {}
        if flights:
            out.append("| real test images, judge refit without their flight (reports/judge_flights.md) | - | "
                       + " | ".join(f"{flights[a]['accuracy']:.3f}" if a in flights else "-" for a in attrs) + " |")
        for name, r in rows.items():
            o = r.get("over_seeds", {})
            out.append(f"| {name} | {_ms(o.get('fid'), 1)} | " + " | ".join(
                _ms(o["attributes"][a]["accuracy"]) for a in attrs) + " |")
        maj = next(iter(rows.values()))["over_seeds"]["attributes"]
        out.append("| majority class (always answer it) | - | " + " | ".join(
            f"{maj[a]['majority_rate']:.3f}" for a in attrs) + " |")
    div = {name: r["over_seeds"]["seed_diversity"] for name, r in rows.items()
           if "seed_diversity" in r.get("over_seeds", {})}
    if div:
        out += ["", "**Seed diversity** (judge's Inception features): *within*, the mean distance between two seeds' "
                "images of one prompt; *across*, between two prompts' images under one seed; their ratio is near 0 "
                "when the seed barely changes the image (a model recalling training layouts) and near 1 when the "
                "seed varies it as much as the prompt.", "", "| conditioner | within | across | ratio |",
                "| --- | --- | --- | --- |"]
        out += [f"| {name} | {d['within']:.2f} | {d['across']:.2f} | {d['ratio']:.3f} |" for name, d in div.items()]
    swaps = next(iter(rows.values())).get("over_seeds", {}).get("swap", {})
    if swaps:
        out += ["", "**Swap test**: the same seeds with prompts that differ in one IR-Cap fact (thermgen.ircap.swap). "
                "*follows*: the judge's verdict is the prompted value on both images of the pair; *moved*: the "
                "probability of side B's value rose from image A to image B; *factual* / *edited*: the judge's "
                "accuracy on the side whose prompt keeps the record's own value / on the side that states the edit.",
                "", "| conditioner | swap | pairs | follows | moved | verdict changed | factual side | edited side |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in rows.items():
            for kind, sw in r.get("over_seeds", {}).get("swap", {}).items():
                n_real = sw.get("pairs_with_real_value")
                pairs = sw["pairs"] if n_real in (None, sw["pairs"]) else f"{sw['pairs']} ({n_real} with a real value)"
                out.append(f"| {name} | {kind} | {pairs} | {_ms(sw['follows'])} | {_ms(sw['moved'])} | "
                           f"{_ms(sw['verdict_changed'])} | {_ms(sw.get('factual_correct'))} | "
                           f"{_ms(sw.get('edited_correct'))} |")
    conf = {name: r.get("judge", {}).get("attributes", {}) for name, r in rows.items()}
    if any(conf.values()):
        from thermgen.metrics.judging import confusion_markdown

        for name, c in conf.items():
            out += ["", f"Confusion tables, {name}, seed {seeds[0] if seeds else ''}:", "", confusion_markdown(c)]
    return out


# ---- contrast ------------------------------------------------------------------------------------
STATS_DOC = ('mean: mean level ("fixed" units, [0, 1]); spread: 95th minus 5th percentile within the image; '
             "hot_fraction: share of pixels above the hot threshold, the 95th percentile of all real pixels "
             "pooled over the real groups (one absolute threshold for real and generated images)")


def image_stats(img: np.ndarray, hot_threshold: float) -> dict[str, float]:
    """Brightness statistics of one thermal image (H, W) in [0, 1] ("fixed" units, white-hot); see STATS_DOC."""
    return {"mean": float(img.mean()), "spread": float(np.percentile(img, 95) - np.percentile(img, 5)),
            "hot_fraction": float((img > hot_threshold).mean())}


def _summ(stats: list[dict[str, float]]) -> dict[str, Any]:
    keys = ("mean", "spread", "hot_fraction")
    return {"n": len(stats), **{k: float(np.mean([s[k] for s in stats])) if stats else None for k in keys},
            **{f"{k}_std": float(np.std([s[k] for s in stats])) if stats else None for k in keys}}


def _real_groups(ctx: Context) -> dict[str, list[dict]]:
    """Real test (and val, if test is small) records per contrast group, from metadata and annotations."""
    d = ctx.cfg["data"]
    recs = _records(ctx, d["test_split"]) + _records(ctx, d["val_split"])
    groups: dict[str, list[dict]] = {"day": [], "night": [], "many_cars": [], "few_people": []}
    for r in recs:
        tod = r["meta"].get("time_of_day")
        if tod in ("day", "night"):
            groups[tod].append(r)
        labels = [o["label"] for o in r["objects"]]
        cars, people = labels.count("Car"), labels.count("Person")
        if cars >= 5:
            groups["many_cars"].append(r)
        if 1 <= people <= 4 and cars == 0:
            groups["few_people"].append(r)
    return groups


def run_contrast(ctx: Context) -> dict:
    """Samples for contrasting prompts vs the real images of each kind: are the differences the real ones?"""
    from thermgen.train.unet import sample_images, save_thermal_grid

    cfg = ctx.cfg
    mode = cfg["unet"]["conditioning"]
    pipe = _load_pipeline(ctx.run / "pipeline", ctx.device)
    n = cfg["eval"]["contrast_images_per_prompt"]
    names = list(CONTRAST_PROMPTS)
    gen_imgs = {}
    for name in names:
        g, f = CONTRAST_PROMPTS[name]
        prompts, fine = _prompts_for_mode(mode, [{"global_caption": g, "fine_caption": f}])
        gen_imgs[name] = sample_images(pipe, prompts, prompts_fine=fine, n_per_prompt=n,
                                       steps=cfg["eval"]["num_inference_steps"], guidance=cfg["train"]["guidance_scale"],
                                       seed=cfg["run"]["seed"] + 1000, resolution=cfg["train"]["resolution"])[0]
    groups = _real_groups(ctx)
    real_imgs = {k: _load(ctx, _subset(v, 64))[:, 0].numpy() if v else np.zeros((0, 1, 1)) for k, v in groups.items()}
    pooled = [v.reshape(-1) for v in real_imgs.values() if len(v)]
    hot = float(np.percentile(np.concatenate(pooled), 95)) if pooled else 0.5
    gen = {k: _summ([image_stats(im, hot) for im in v]) for k, v in gen_imgs.items()}
    real = {k: _summ([image_stats(im, hot) for im in v]) for k, v in real_imgs.items()}

    comparisons = []
    for a, b, metric in (("night", "day", "mean"), ("night", "day", "spread"), ("night", "day", "hot_fraction"),
                         ("many_cars", "few_people", "hot_fraction"), ("many_cars", "few_people", "mean"),
                         ("many_cars", "few_people", "spread")):
        ga, gb, ra, rb = gen[a][metric], gen[b][metric], real[a][metric], real[b][metric]
        row = {"a": a, "b": b, "metric": metric, "generated_a": ga, "generated_b": gb, "real_a": ra, "real_b": rb}
        if None not in (ra, rb):
            row["same_direction"] = bool(np.sign(ga - gb) == np.sign(ra - rb))
            row["a_closer_to_real_a_than_real_b"] = bool(abs(ga - ra) < abs(ga - rb))
            row["b_closer_to_real_b_than_real_a"] = bool(abs(gb - rb) < abs(gb - ra))
        comparisons.append(row)
    report = {"schema_version": 1, "conditioning": mode, "prompts": {k: {"global": v[0], "fine": v[1]}
                                                                     for k, v in CONTRAST_PROMPTS.items()},
              "images_per_prompt": n, "statistics": STATS_DOC, "hot_threshold": hot,
              "generated": gen, "real": real,
              "real_selection": {"day": "time_of_day = day", "night": "time_of_day = night",
                                 "many_cars": ">= 5 annotated cars", "few_people": "1-4 people, no cars",
                                 "splits": [cfg["data"]["test_split"], cfg["data"]["val_split"]],
                                 "max_per_group": 64},
              "comparisons": comparisons}
    if cfg["eval"]["judge"]:
        report["judge"] = contrast_judge(ctx, gen_imgs, real_imgs)
    # Grid: each prompt's samples beside real examples of the same kind.
    k = min(6, n)
    rows, labels = [], []
    for name in names:
        rows.append(gen_imgs[name][:k])
        labels.append(f"generated: {name}")
        r = real_imgs[name]
        if len(r):
            pad = np.zeros((k, *r.shape[1:]), dtype=np.float32)
            pad[:min(k, len(r))] = r[:k]
            rows.append(pad)
            labels.append(f"real: {name}")
    save_thermal_grid(np.stack(rows), ctx.reports_dir / "contrast.png", row_labels=labels,
                      title="contrasting prompts: generated vs real")
    report["png"] = str(ctx.reports_dir / "contrast.png")
    _write_json(ctx.reports_dir / "contrast.json", report)
    (ctx.reports_dir / "contrast.md").write_text(contrast_markdown(report))
    return {"comparisons": comparisons}


def contrast_judge(ctx: Context, gen_imgs: dict[str, np.ndarray], real_imgs: dict[str, np.ndarray]) -> dict:
    """The attribute judge on the contrast samples: how far apart are the day and night prompts' images?

    For each group, the share of images judged night (and the mean probability of night); for day vs night,
    the difference of those shares and the AUC of P(night) (night-prompt images vs day-prompt images:
    0.5 = indistinguishable, 1 = every night image judged more night-like than every day image). The same
    numbers for the real images of each kind are the reference.
    """
    from thermgen.io import write_png16
    from thermgen.metrics.attributes import AttributeJudge, separation_auc

    judge = AttributeJudge.load(judge_dir(ctx))
    if "time_of_day" not in judge.heads:
        return {"note": "the judge has no time_of_day head (no day/night labels in the training split)"}
    tmp = ctx.run / "eval" / "contrast_judge"
    out: dict[str, Any] = {}
    for side, imgs in (("generated", gen_imgs), ("real", real_imgs)):
        p_night = {}
        for name in ("day", "night"):
            arr = imgs.get(name)
            if arr is None or not len(arr) or arr.ndim != 3:
                continue
            d = tmp / side / name
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            for i, im in enumerate(arr):
                write_png16(d / f"{i:05d}.png", np.rint(np.clip(im, 0, 1) * 65535).astype(np.uint16))
            proba = judge.predict_proba(_folder_features(ctx, d))["time_of_day"]
            p_night[name] = proba[:, judge.heads["time_of_day"]["classes"].index("night")]
        if len(p_night) == 2:
            out[side] = {"night_share_day_prompts": float((p_night["day"] > 0.5).mean()),
                         "night_share_night_prompts": float((p_night["night"] > 0.5).mean()),
                         "mean_p_night_day_prompts": float(p_night["day"].mean()),
                         "mean_p_night_night_prompts": float(p_night["night"].mean()),
                         "separation": float((p_night["night"] > 0.5).mean() - (p_night["day"] > 0.5).mean()),
                         "auc": separation_auc(p_night["night"], p_night["day"]), "n": [len(p_night["day"]), len(p_night["night"])]}
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def contrast_markdown(report: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.4f}"

    lines = ["# Contrast report", "", f"Conditioning: `{report['conditioning']}`; {report['images_per_prompt']} "
             "samples per prompt.", "", f"Statistics (per image, then averaged): {report['statistics']}; hot threshold "
             f"{report['hot_threshold']:.4f}.", "",
             "| group | prompt | generated mean / spread / hot | real mean / spread / hot (n) |", "| --- | --- | --- | --- |"]
    for k, p in report["prompts"].items():
        g, r = report["generated"][k], report["real"][k]
        lines.append(f"| {k} | {p['global']} | {f(g['mean'])} / {f(g['spread'])} / {f(g['hot_fraction'])} | "
                     f"{f(r['mean'])} / {f(r['spread'])} / {f(r['hot_fraction'])} ({r['n']}) |")
    lines += ["", "| contrast | metric | generated a vs b | real a vs b | same direction | a closer to real a | "
              "b closer to real b |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in report["comparisons"]:
        lines.append(f"| {c['a']} vs {c['b']} | {c['metric']} | {f(c['generated_a'])} vs {f(c['generated_b'])} | "
                     f"{f(c['real_a'])} vs {f(c['real_b'])} | {c.get('same_direction', '-')} | "
                     f"{c.get('a_closer_to_real_a_than_real_b', '-')} | {c.get('b_closer_to_real_b_than_real_a', '-')} |")
    j = report.get("judge") or {}
    if j.get("generated"):
        lines += ["", "**Day vs night, by the attribute judge** (trained on the real train split; independent of T-CLIP): "
                  "share of images judged night, mean P(night), and the AUC of P(night) between night-prompt and "
                  "day-prompt images (0.5: the prompts make no difference the judge can see; 1: fully apart).", "",
                  "| images | judged night: day prompt | judged night: night prompt | separation | mean P(night) day / night | AUC |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for side in ("generated", "real"):
            r = j.get(side)
            if r:
                lines.append(f"| {side} | {r['night_share_day_prompts']:.3f} | {r['night_share_night_prompts']:.3f} | "
                             f"{r['separation']:+.3f} | {r['mean_p_night_day_prompts']:.3f} / "
                             f"{r['mean_p_night_night_prompts']:.3f} | {r['auc']:.3f} |")
    lines += ["", f"Grid: `{Path(report['png']).name}` (generated rows above real rows of the same kind)."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# The stage table and the runner
# --------------------------------------------------------------------------------------------------
def _unet_config(cfg: dict, with_conditioning: bool = True) -> Any:
    unet = {k: v for k, v in cfg["unet"].items() if with_conditioning or k not in ("conditioning", "fusion_alpha")}
    return [cfg["run"]["seed"], unet, cfg["train"], cfg["scheduler"], cfg["data"]["max_train_images"]]


STAGES: tuple[Stage, ...] = (
    Stage("data", (), lambda c: [c["run"]["seed"], c["data"]],
          lambda ctx: [ctx.reports_dir / "data.json"], run_data),
    Stage("captions", ("data",), lambda c: c["captions"], lambda ctx: [ctx.manifest], run_captions),
    Stage("tclip", ("captions",), _tclip_stage_config,
          lambda ctx: [ctx.tclip_dir / "tclip_config.json"], run_tclip),
    Stage("vae", ("captions",), lambda c: [vae_config(c), c["data"]["max_train_images"]],
          lambda ctx: [ctx.vae_dir / "config.json"], run_vae),
    Stage("unet", ("tclip", "vae"), _unet_config,
          lambda ctx: [ctx.run / "pipeline" / "model_index.json", ctx.reports_dir / "samples.png"], run_unet),
    Stage("ablation", ("tclip", "vae"), lambda c: _unet_config(c, with_conditioning=False) + ["base"],
          lambda ctx: [ctx.run / "ablation" / "pipeline" / "model_index.json"], run_ablation,
          enabled=lambda c: c["eval"]["enabled"] and c["eval"]["ablation"]),
    Stage("judge", ("captions",), lambda c: [c["train"]["resolution"], c["data"]["train_split"], c["data"]["val_split"],
                                             c["data"]["test_split"], _judge_version()],
          lambda ctx: [judge_dir(ctx) / "judge.json", judge_dir(ctx) / "judge.safetensors",
                       ctx.reports_dir / "judge.json", ctx.reports_dir / "judge.md"], run_judge,
          enabled=lambda c: c["eval"]["enabled"] and c["eval"]["judge"]),
    Stage("contrast", ("unet", "judge"), lambda c: [c["eval"]["contrast_images_per_prompt"], c["eval"]["num_inference_steps"],
                                            CONTRAST_PROMPTS],
          lambda ctx: [ctx.reports_dir / "contrast.json", ctx.reports_dir / "contrast.md"], run_contrast,
          enabled=lambda c: c["eval"]["enabled"]),
    Stage("evaluate", ("unet", "ablation", "judge"), lambda c: [
              _eval_hash_keys(c["eval"]), c["run"]["seed"]],
          lambda ctx: [ctx.reports_dir / "generation.json", ctx.reports_dir / "generation.md"], run_evaluate,
          enabled=lambda c: c["eval"]["enabled"]),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def _eval_hash_keys(ev: dict) -> dict:
    """The ``eval`` keys the evaluate stage's hash reads: not the contrast report's own key, and
    ``contrast_scale`` / ``guidance_interval`` only when on, so that runs from before the keys, or with them off,
    stay complete."""
    out = {k: v for k, v in ev.items() if k not in ("contrast_images_per_prompt", "contrast_scale", "guidance_interval")}
    if ev.get("contrast_scale"):
        out["contrast_scale"] = float(ev["contrast_scale"])
    if ev.get("guidance_interval") is not None:
        out["guidance_interval"] = [float(v) for v in ev["guidance_interval"]]
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def stage_hash(stage: Stage, ctx: Context) -> str:
    return config_hash(stage.name, stage.config(ctx.cfg), [ctx.tokens.get(d, "") for d in stage.deps])


def read_marker(ctx: Context, name: str) -> dict | None:
    p = ctx.run / MARKER_DIR / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def stage_status(stage: Stage, ctx: Context) -> tuple[bool, str]:
    """(complete?, why): complete when the marker names this stage hash and every output exists."""
    h = stage_hash(stage, ctx)
    m = read_marker(ctx, stage.name)
    if m is None:
        return False, "not run yet"
    if m.get("hash") != h:
        return False, "config or an upstream stage changed"
    missing = [str(p) for p in stage.outputs(ctx) if not p.exists()]
    if missing:
        return False, f"outputs missing: {missing[0]}"
    return True, "complete"


def stage_action(stage: Stage, ctx: Context, rerun: tuple[str, ...], running: set[str]) -> tuple[str, str]:
    """``(action, why)`` for one stage, action "skip" (complete), "run" or "disabled"; ``running``: the stages
    before it that run. The one decision that :func:`run_recipe` acts on and :func:`plan_recipe` prints."""
    if not stage.enabled(ctx.cfg):
        return "disabled", ""
    if stage.name in rerun:
        return "run", "--rerun"
    upstream = next((d for d in stage.deps if d in running), None)
    if upstream:
        return "run", f"upstream stage {upstream} runs"
    done, why = stage_status(stage, ctx)
    return ("skip" if done else "run"), why


def plan_recipe(cfg: dict, run_dir: Path, *, rerun: tuple[str, ...] = (), stop_after: str | None = None
                ) -> list[tuple[str, str, str]]:
    """What :func:`run_recipe` would do with this config and run folder, touching nothing: ``(stage, action, why)``
    per stage (:func:`stage_action`). A stage that runs replaces its outputs, so ``python -m thermgen.train --plan``
    is the way to check that a re-evaluation of an old run will not retrain (and delete) its T-CLIP or UNet first."""
    ctx = Context(cfg=cfg, run=Path(run_dir))
    plan, running = [], set()
    for stage in STAGES:
        action, why = stage_action(stage, ctx, rerun, running)
        plan.append((stage.name, action, why))
        if action == "run":
            running.add(stage.name)
        else:
            ctx.tokens[stage.name] = "disabled" if action == "disabled" else read_marker(ctx, stage.name)["token"]
        if stage.name == stop_after:
            break
    return plan


def run_recipe(cfg: dict, run_dir: Path, *, resume: bool = False, rerun: tuple[str, ...] = (),
               stop_after: str | None = None, progress: bool = True) -> dict:
    """Run every enabled stage in order, skipping complete ones. Returns the recipe report (also written).
    ``cfg``: a validated config, as :func:`thermgen.train.config.load_config`'s dict or a
    :class:`thermgen.train.config.RecipeConfig`."""
    from thermgen.train.config import RecipeConfig

    if isinstance(cfg, RecipeConfig):
        cfg = cfg.to_dict()
    ctx = Context(cfg=cfg, run=Path(run_dir), resume=resume, progress=progress)
    if cfg["run"]["threads"]:
        torch.set_num_threads(cfg["run"]["threads"])
    ctx.run.mkdir(parents=True, exist_ok=True)
    (ctx.run / MARKER_DIR).mkdir(exist_ok=True)
    ctx.reports_dir.mkdir(exist_ok=True)
    (ctx.run / "config.yaml").write_text(dump_yaml(cfg))
    handler = logging.FileHandler(ctx.run / "recipe.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    t_all = time.time()
    summary: dict[str, Any] = {"run": str(ctx.run), "stages": {}}
    prev = _read_previous(ctx)
    running: set[str] = set()
    try:
        for stage in STAGES:
            action, reason = stage_action(stage, ctx, rerun, running)
            if action == "disabled":
                summary["stages"][stage.name] = {"status": "disabled"}
                ctx.tokens[stage.name] = "disabled"
                continue
            h = stage_hash(stage, ctx)
            if action == "skip":
                m = read_marker(ctx, stage.name)
                ctx.tokens[stage.name] = m["token"]
                summary["stages"][stage.name] = {"status": "skipped (complete)",
                                                 "seconds": prev.get(stage.name, {}).get("seconds")}
                logger.info("stage %-9s skipped: complete (hash %s)", stage.name, h)
                print(f"[thermgen.train] {stage.name}: skipped (complete)", flush=True)
                if stage.name == stop_after:
                    break
                continue
            running.add(stage.name)
            print(f"[thermgen.train] {stage.name}: running ({reason})", flush=True)
            logger.info("stage %-9s running (%s), hash %s", stage.name, reason, h)
            (ctx.run / MARKER_DIR / f"{stage.name}.json").unlink(missing_ok=True)
            ctx.current_hash = h
            t0 = time.time()
            rep = stage.run(ctx)
            secs = round(time.time() - t0, 2)
            missing = [str(p) for p in stage.outputs(ctx) if not p.exists()]
            if missing:
                raise RuntimeError(f"stage {stage.name} finished without writing {missing}")
            token = config_hash(h, time.time())
            _write_json(ctx.run / MARKER_DIR / f"{stage.name}.json",
                        {"stage": stage.name, "hash": h, "token": token, "seconds": secs,
                         "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "outputs": [str(p) for p in stage.outputs(ctx)]})
            ctx.tokens[stage.name] = token
            ctx.reports[stage.name] = rep
            summary["stages"][stage.name] = {"status": "ran", "seconds": secs, "peak_rss_mb": peak_rss_mb()}
            logger.info("stage %-9s done in %.1f s (peak RSS %.0f MiB)", stage.name, secs, peak_rss_mb())
            print(f"[thermgen.train] {stage.name}: done in {secs:.1f} s", flush=True)
            if stage.name == stop_after:
                break
    finally:
        summary["seconds"] = round(time.time() - t_all, 2)
        summary["peak_rss_mb"] = peak_rss_mb()
        summary["torch_threads"] = torch.get_num_threads()
        summary["cpu_count"] = os.cpu_count()
        _write_json(ctx.reports_dir / "recipe.json", summary)
        (ctx.reports_dir / "recipe.md").write_text(recipe_markdown(summary))
        root.removeHandler(handler)
        handler.close()
    return summary


def _read_previous(ctx: Context) -> dict:
    out = {}
    for name in STAGE_NAMES:
        m = read_marker(ctx, name)
        if m:
            out[name] = m
    return out


def recipe_markdown(summary: dict) -> str:
    lines = ["# Recipe run", "", f"Run folder: `{summary['run']}`", "",
             f"This invocation: {summary['seconds']:.1f} s wall, peak RSS {summary['peak_rss_mb']:.0f} MiB "
             f"({summary['cpu_count']} CPUs, {summary['torch_threads']} torch threads).", "",
             "| stage | status | seconds |", "| --- | --- | --- |"]
    for name, s in summary["stages"].items():
        lines.append(f"| {name} | {s['status']} | {s.get('seconds') if s.get('seconds') is not None else '-'} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------------
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def resolve_config(name: str | None) -> Path | None:
    """A config path, or a name of ``configs/NAME.yaml``; None = the built-in CPU default."""
    if name is None:
        return None
    p = Path(name).expanduser()
    if p.is_file():
        return p
    cand = CONFIG_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if cand.is_file():
        return cand
    from thermgen.train.config import ConfigError

    known = sorted(x.stem for x in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    raise ConfigError(f"--config {name!r}: no such file, and no configs/{name}.yaml (known: {known})")


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m thermgen.train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the thermal diffusion recipe: data -> IR-Cap captions -> T-CLIP -> VAE -> UNet -> "
                    "contrast report and generation metrics (with the base-text-tower ablation). Stages whose "
                    "outputs are complete for the same config are skipped; a changed key reruns the stages that "
                    "read it and everything after them.",
        epilog="Config overrides are section.key=value (value parsed as YAML), e.g.\n"
               "  python -m thermgen.train train.max_train_steps=50 eval.ablation=false\n"
               "List every key with its default: python -m thermgen.train --list-keys\n"
               "Outputs: RUN/pipeline (diffusers folder), RUN/tclip, RUN/reports (samples.png, contrast.*, "
               "generation.*, recipe.*).")
    p.add_argument("--config", default=None,
                   help="recipe YAML: a path or a name in configs/ (cpu-default, paper-vitb16-sd15, sdxl-gpu); "
                        "default: the built-in CPU recipe (same as configs/cpu-default.yaml)")
    p.add_argument("--data-source", default=None,
                   help="dataset adapter (hit-uav, coco, voc, kaist, folder, synthetic); overrides data.source "
                        "(default: the config's, synthetic)")
    p.add_argument("--data-root", default=None, help="dataset root; overrides data.root (default: the config's)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (default: runs/<config name>-<data source>)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted T-CLIP, VAE or UNet training from its newest checkpoint (same config only); "
                        "default: an incomplete stage starts over")
    p.add_argument("--rerun", action="append", default=[], choices=STAGE_NAMES, metavar="STAGE",
                   help="force this stage (and so everything after it) to run again; repeatable; stages: "
                        f"{', '.join(STAGE_NAMES)} (default: none)")
    p.add_argument("--stop-after", default=None, choices=STAGE_NAMES, metavar="STAGE",
                   help="stop after this stage (default: run all)")
    p.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="run every training stage (T-CLIP, VAE, UNet) data-parallel on N processes: torchrun, gloo "
                        "on CPU, NCCL on GPUs; the config's batch sizes stay the global ones (overrides "
                        "run.num_processes; default: the config's, 1)")
    p.add_argument("--list-keys", action="store_true", help="print every config key with its default and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--plan", action="store_true",
                   help="print which stages would run or be skipped in the run folder, and why, and exit without "
                        "touching it (a stage that runs replaces its outputs: check before re-evaluating an old run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs still go to RUN/recipe.log)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides (see above)")
    return p


def main(argv: list[str] | None = None) -> int:
    import sys

    from thermgen.train.config import ConfigError, describe_keys, load_config

    args = build_parser().parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print("error: python -m thermgen.train is the runner, not a training process: start it once, with "
              "--num-processes N, and it launches every training stage on N processes itself", file=sys.stderr)
        return 2
    if args.list_keys:
        print(describe_keys())
        return 0
    overrides = list(args.overrides)
    if args.data_source is not None:
        overrides.append(f"data.source={args.data_source}")
    if args.data_root is not None:
        overrides.append(f"data.root={args.data_root}")
    if args.num_processes is not None:
        overrides.append(f"run.num_processes={args.num_processes}")
    try:
        cfg_path = resolve_config(args.config)
        cfg = load_config(cfg_path, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    out = args.out or Path("runs") / f"{cfg_path.stem if cfg_path else 'cpu-default'}-{cfg['data']['source']}"
    if args.plan:
        plan = plan_recipe(cfg, out, rerun=tuple(args.rerun), stop_after=args.stop_after)
        for name, action, why in plan:
            print(f"{name:<9} {action:<8} {why}")
        n = sum(a == "run" for _, a, _ in plan)
        print(f"[thermgen.train] plan for {out}: {n} stage(s) would run, replacing their outputs; nothing was changed")
        return 0
    summary = run_recipe(cfg, out, resume=args.resume, rerun=tuple(args.rerun), stop_after=args.stop_after,
                         progress=not args.no_progress)
    print(f"[thermgen.train] finished in {summary['seconds']:.1f} s, peak RSS {summary['peak_rss_mb']:.0f} MiB; "
          f"run folder {out}", flush=True)
    return 0
