"""Training checkpoints shared by the VAE and UNet stages: ``checkpoint-<step>`` folders written by
``accelerator.save_state`` with rotation, and the extra state saved beside them without pickles (the lr schedule
as JSON, an EMA as JSON + safetensors). accelerate loads its own files with ``weights_only=True``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders in ``ckpt_dir``, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [d for d in ckpt_dir.iterdir() if d.is_dir() and d.name.startswith("checkpoint-")
             and d.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda d: int(d.name.split("-", 1)[1]))


def rotate_checkpoints(ckpt_dir: Path, limit: int | None) -> list[Path]:
    """Delete the oldest checkpoints so that one more save keeps at most ``limit``; returns what was removed."""
    if limit is None:
        return []
    ckpts = list_checkpoints(ckpt_dir)
    removed = ckpts[:max(0, len(ckpts) - limit + 1)]
    for d in removed:
        shutil.rmtree(d)
    return removed


def save_extra_state(ckpt: Path, lr_scheduler, ema) -> None:
    """Save the lr schedule (JSON) and the EMA (JSON + safetensors) beside accelerate's state.

    Not through ``register_for_checkpointing``: accelerate reloads such objects by unpickling them
    (weights_only disabled); JSON and safetensors load without any unpickling.
    """
    from safetensors.torch import save_file

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
    if not f.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} lacks {f.name} (not written by thermgen.train?)")
    state = json.loads(f.read_text())
    state["lr_lambdas"] = [None] * len(lr_scheduler.lr_lambdas)
    lr_scheduler.load_state_dict(state)
    if ema is not None:
        if not (ckpt / "ema.safetensors").is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} has no ema.safetensors but train.use_ema is true")
        tensors = load_file(str(ckpt / "ema.safetensors"))
        sd = json.loads((ckpt / "ema.json").read_text())
        dev = ema.shadow_params[0].device if ema.shadow_params else "cpu"
        sd["shadow_params"] = [tensors[f"shadow.{i}"].to(dev) for i in range(len(tensors))]
        ema.load_state_dict(sd)
