"""Diffusers samplers by short name, and loading a saved scheduler whatever its class.

Used by ``python -m thermgen.generate --scheduler``, the SD-folder import and the control bench.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["SCHEDULER_NAMES", "load_scheduler", "make_scheduler", "scheduler_class"]

# Short names for the usual samplers; any diffusers scheduler class name (e.g. "KDPM2DiscreteScheduler") works too.
SCHEDULER_NAMES: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "lms": "LMSDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpm-solver": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def scheduler_class(name: str):
    import diffusers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    cls_name = SCHEDULER_NAMES.get(name.lower(), name)
    cls = getattr(diffusers, cls_name, None) if cls_name.endswith("Scheduler") else None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(
            f"unknown scheduler {name!r}; use one of {sorted(SCHEDULER_NAMES)} or a diffusers scheduler class name"
        )
    return cls


def make_scheduler(name: str, config: dict[str, Any]):
    """A diffusers scheduler by short name ("ddim", "euler", "dpm++", ... see :data:`SCHEDULER_NAMES`) or class
    name, built with ``from_config`` from another scheduler's config (so the training noise schedule and
    prediction type carry over). Raises ``ValueError`` naming the scheduler when it is unknown."""
    return scheduler_class(name).from_config(config)


def load_scheduler(folder: str | Path):
    """Load the scheduler saved in ``folder`` (``scheduler_config.json``), whatever its class."""
    folder = Path(folder)
    config_path = folder / "scheduler_config.json"
    if not config_path.is_file():
        from thermgen.data.sample import DataError

        raise DataError(f"{folder}: no scheduler_config.json")
    name = json.loads(config_path.read_text()).get("_class_name", "")
    return scheduler_class(name).from_pretrained(folder)
