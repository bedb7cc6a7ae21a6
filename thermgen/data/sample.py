"""The one sample type every dataset adapter yields, and the errors/skip report they share.

A :class:`ThermalSample` describes one thermal image on disk: where it is, its size, its object
boxes (``[x, y, w, h]`` in pixels, top-left origin), scene metadata and split. It never holds
pixels; read them with :func:`thermgen.io.read_thermal`.

Scene metadata keys (all optional; absent means unknown, never guessed):

``time_of_day``      ``"day"`` | ``"night"``
``weather``          ``"clear"`` | ``"rain"`` | ``"fog"`` | ``"snow"`` | ``"overcast"``
``altitude_m``       float, sensor height above ground in metres (UAV datasets)
``view_angle_deg``   float, camera pitch: 90 looks straight down (nadir), 0 looks at the horizon
``ambient_k``        float, air temperature in kelvin (synthetic / radiometric data)
``scene``            str, e.g. ``"road"``, ``"parking"``, ``"campus"``
``frame``            str, the dataset's own frame identifier
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data. The message always names the file (and record/line/field) at fault."""


@dataclass
class Box:
    """One annotated object.

    label: the dataset's class name (e.g. ``"Person"``, ``"Car"``).
    xywh: ``(x, y, w, h)`` in pixels, top-left corner plus size, float.
    attrs: extra per-object facts. Synthetic scenes put exact ground truth here
        (``temperature_k``, ``emissivity``, ``state`` ...); real datasets may add e.g. ``occluded``.
    """

    label: str
    xywh: tuple[float, float, float, float]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.xywh
        return (x, y, x + w, y + h)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "box": [float(v) for v in self.xywh], "attrs": dict(self.attrs)}


@dataclass
class ThermalSample:
    """One thermal image and its annotations.

    image_path: absolute path of the image file.
    width, height: image size in pixels.
    boxes: annotated objects (may be empty).
    meta: scene metadata (see the module docstring for the keys).
    split: ``"train"`` | ``"val"`` | ``"test"`` | any name the dataset uses.
    source: the adapter that produced it (``"hit-uav"``, ``"coco"``, ``"voc"``, ``"kaist"``,
        ``"folder"``, ``"synthetic"``).
    image_id: identifier unique within the source, stable across runs.
    captions: captions shipped with the data (e.g. from the folder adapter's CSV/JSONL), if any.
    radiometric: calibration when pixel values map to temperature, e.g.
        ``{"kelvin_per_count": 0.002, "kelvin_offset": 220.0}`` (T = offset + count * gain);
        ``None`` when the data is not radiometric (8-bit AGC images).
    """

    image_path: Path
    width: int
    height: int
    boxes: list[Box]
    meta: dict[str, Any]
    split: str
    source: str
    image_id: str
    captions: dict[str, str] | None = None
    radiometric: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_path"] = str(self.image_path)
        d["boxes"] = [b.to_dict() for b in self.boxes]
        return d


@dataclass
class SkipReport:
    """Records skipped on purpose (``skip_invalid=True``), counted per reason, with examples.

    Adapters raise :class:`DataError` on bad input unless asked to skip; when they skip, every
    skipped record is counted here so that nothing is lost silently.
    """

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples:
            ex.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "SkipReport":
        """The report :meth:`to_dict` wrote (None: an empty one), to go on counting in a later stage."""
        d = d or {}
        return cls(counts={k: int(v) for k, v in d.get("counts", {}).items()},
                   examples={k: list(v) for k, v in d.get("examples", {}).items()})

    def summary(self) -> str:
        if not self.total:
            return "no records skipped"
        parts = [f"{n} x {reason} (e.g. {self.examples[reason][0]})" for reason, n in sorted(self.counts.items())]
        return f"skipped {self.total} records: " + "; ".join(parts)


def as_path(p: str | Path) -> Path:
    return Path(p).expanduser().resolve()
