"""Validation shared by the dataset adapters: raise-or-skip, box checks, metadata checks.

Policy (the same in every adapter):

- A bad *record* (one box, one image entry, one per-image annotation file) raises
  :class:`DataError` naming the file and the record, or, with ``skip_invalid=True``, is dropped and
  counted in the :class:`SkipReport` under a fixed reason. A bad box drops that box only; a bad
  image entry (missing file, broken fields) drops the image with its boxes.
- A whole annotation file that cannot be parsed, or a root with no data, always raises: skipping
  is for records, never for a whole split.
- Boxes that overrun the image border by at most :data:`BOX_TOLERANCE_PX` are clipped to it:
  that much is rounding in the annotation tools (VOC's 1-based corners, FLIR's rounded corners),
  not a wrong box. Beyond it the box is "outside image".
"""

from __future__ import annotations

import math
from typing import Any

from .sample import DataError, SkipReport

BOX_TOLERANCE_PX = 1.0

# Fixed reason names, so that skip reports from different adapters and runs can be compared.
MISSING_IMAGE = "missing image"
BROKEN_RECORD = "broken record"
UNKNOWN_LABEL = "unknown label"
BOX_OUTSIDE = "box outside image"
EMPTY_BOX = "empty box"
DUPLICATE = "duplicate record"
UNREADABLE_IMAGE = "unreadable image"
MISSING_ANNOTATION = "missing annotation"

TIME_OF_DAY = ("day", "night")
WEATHER = ("clear", "rain", "fog", "snow", "overcast")
SPLIT_ORDER = ("train", "val", "valid", "validation", "test", "video")


class Validator:
    """Raise a :class:`DataError`, or count a skip, for each problem found while reading."""

    def __init__(self, report: SkipReport, skip_invalid: bool):
        self.report = report
        self.skip_invalid = skip_invalid

    def problem(self, reason: str, where: str, detail: str = "") -> None:
        """Report one bad record: raises unless skipping, in which case it is counted."""
        msg = f"{where}: {reason}" + (f": {detail}" if detail else "")
        if not self.skip_invalid:
            raise DataError(msg + " (pass skip_invalid=True / --skip-invalid to skip such records and count them)")
        self.report.add(reason, msg)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_box(
    xywh: Any, width: int, height: int, where: str, v: Validator, tolerance: float = BOX_TOLERANCE_PX
) -> tuple[float, float, float, float] | None:
    """Validate one ``[x, y, w, h]`` pixel box against an image of ``width`` x ``height``.

    Returns the (possibly clipped) box as floats, or None when the box was bad and is skipped.
    """
    if not isinstance(xywh, (list, tuple)) or len(xywh) != 4 or not all(is_number(c) for c in xywh):
        v.problem(BROKEN_RECORD, where, f"box must be 4 finite numbers [x, y, w, h], got {xywh!r}")
        return None
    x, y, w, h = (float(c) for c in xywh)
    if w <= 0 or h <= 0:
        v.problem(EMPTY_BOX, where, f"box {[x, y, w, h]} has non-positive width or height")
        return None
    x0, y0, x1, y1 = x, y, x + w, y + h
    if x0 < -tolerance or y0 < -tolerance or x1 > width + tolerance or y1 > height + tolerance:
        v.problem(BOX_OUTSIDE, where, f"box [x, y, w, h] = {[x, y, w, h]} exceeds the {width}x{height} image")
        return None
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    x1, y1 = min(x1, float(width)), min(y1, float(height))
    if x1 <= x0 or y1 <= y0:
        v.problem(EMPTY_BOX, where, f"box {[x, y, w, h]} has no area inside the {width}x{height} image")
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def meta_problem(meta: Any) -> str | None:
    """What is wrong with scene metadata (keys of :mod:`thermgen.data.sample`), or None if valid."""
    if not isinstance(meta, dict):
        return f"meta must be an object, got {type(meta).__name__}"
    if "time_of_day" in meta and meta["time_of_day"] not in TIME_OF_DAY:
        return f"meta.time_of_day must be one of {TIME_OF_DAY}, got {meta['time_of_day']!r}"
    if "weather" in meta and meta["weather"] not in WEATHER:
        return f"meta.weather must be one of {WEATHER}, got {meta['weather']!r}"
    for key in ("altitude_m", "view_angle_deg", "ambient_k"):
        if key in meta and not is_number(meta[key]):
            return f"meta.{key} must be a number, got {meta[key]!r}"
    if "view_angle_deg" in meta and not (0.0 <= meta["view_angle_deg"] <= 90.0):
        return f"meta.view_angle_deg must be in [0, 90] (90 = nadir), got {meta['view_angle_deg']}"
    if "ambient_k" in meta and meta["ambient_k"] <= 0:
        return f"meta.ambient_k is kelvin and must be positive, got {meta['ambient_k']}"
    for key in ("scene", "frame"):
        if key in meta and not isinstance(meta[key], str):
            return f"meta.{key} must be a string, got {meta[key]!r}"
    return None


def clean_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Valid metadata with numbers as floats (call :func:`meta_problem` first)."""
    out = dict(meta)
    for key in ("altitude_m", "view_angle_deg", "ambient_k"):
        if key in out:
            out[key] = float(out[key])
    return out


def sort_splits(names: Any) -> list[str]:
    """Conventional order: train, val, test, then any other names alphabetically."""
    order = {n: i for i, n in enumerate(SPLIT_ORDER)}
    return sorted(set(names), key=lambda n: (order.get(n, len(order)), n))


def check_split(split: str | None, available: list[str], where: str) -> list[str]:
    """The splits to read: all when ``split`` is None; DataError naming what exists otherwise."""
    if not available:
        raise DataError(f"{where}: no splits found")
    if split is None:
        return available
    if split not in available:
        raise DataError(f"{where}: no split {split!r}; available: {', '.join(available)}")
    return [split]
