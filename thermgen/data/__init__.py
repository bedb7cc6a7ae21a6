"""Dataset adapters: every thermal dataset format read into one sample type, :class:`ThermalSample`.

>>> from thermgen.data import load_samples
>>> samples, report = load_samples("hit-uav", "../shared/data/hit-uav", split="test")
>>> print(len(samples), report.summary())

Sources (``SOURCES``) and their modules, each exposing
``load(root, split, report, skip_invalid=False) -> list[ThermalSample]``:

``hit-uav``    :mod:`thermgen.data.hituav`    HIT-UAV, upstream ``normal_json`` layout
``coco``       :mod:`thermgen.data.coco`      COCO-format thermal sets (FLIR ADAS v1 / v2)
``voc``        :mod:`thermgen.data.voc`       Pascal VOC XML (LLVIP)
``kaist``      :mod:`thermgen.data.kaist`     KAIST multispectral pedestrian (bbGt text files)
``folder``     :mod:`thermgen.data.folder`    a folder of images, optional CSV/JSONL captions
``synthetic``  :mod:`thermgen.data.synthetic` physics-based synthetic scenes

Adapters validate while reading. Bad records raise :class:`DataError` naming the file and record;
with ``skip_invalid=True`` they are dropped and counted in the returned :class:`SkipReport`.
Adapter modules are imported on first use, so reading one format never imports the others.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from .sample import Box, DataError, SkipReport, ThermalSample

SOURCES = ("hit-uav", "coco", "voc", "kaist", "folder", "synthetic")
_MODULES = {
    "hit-uav": "thermgen.data.hituav",
    "coco": "thermgen.data.coco",
    "voc": "thermgen.data.voc",
    "kaist": "thermgen.data.kaist",
    "folder": "thermgen.data.folder",
    "synthetic": "thermgen.data.synthetic",
}

__all__ = ["SOURCES", "Box", "DataError", "SkipReport", "ThermalSample", "adapter", "list_splits", "load_samples"]


def adapter(source: str) -> ModuleType:
    """The adapter module of ``source`` (imported on first use)."""
    if source not in _MODULES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    return importlib.import_module(_MODULES[source])


def load_samples(
    source: str, root: str | Path, split: str | None = None, skip_invalid: bool = False
) -> tuple[list[ThermalSample], SkipReport]:
    """Read every sample of ``source`` under ``root`` (only ``split`` when given).

    Returns the samples and the report of records skipped (always empty unless ``skip_invalid``).
    Raises :class:`DataError` naming the file and record of the first bad record otherwise.
    """
    mod = adapter(source)
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: dataset root does not exist")
    report = SkipReport()
    samples = mod.load(root, split, report, skip_invalid=skip_invalid)
    return samples, report


def list_splits(source: str, root: str | Path) -> list[str] | None:
    """Split names available under ``root``, or None when the adapter cannot list them cheaply."""
    mod = adapter(source)
    fn = getattr(mod, "splits", None)
    return list(fn(Path(root).expanduser())) if callable(fn) else None
