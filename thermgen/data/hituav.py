"""HIT-UAV (Suo et al., Scientific Data 10, 227, 2023) in its upstream ``normal_json`` layout.

Layout (``root`` is the dataset folder, or its ``normal_json`` folder)::

    normal_json/annotations/{train,val,test}.json
    normal_json/{train,val,test}/*.jpg          640x512 8-bit grey JPEG, white-hot, AGC (not radiometric)

The JSON is COCO-like but not COCO: the box list is under ``"annotation"`` (COCO's
``"annotations"`` is accepted too) and images carry ``"filename"`` (not ``"file_name"``).
Boxes are ``[x, y, w, h]`` in pixels. Classes: Person, Car, Bicycle, OtherVehicle, DontCare.

Scene metadata comes from the file name
``{0 day|1 night}_{altitude m}_{camera angle deg}_{0 sunny|1 rainy}_{frame}.jpg``:
``time_of_day``, ``altitude_m``, ``view_angle_deg`` (HIT-UAV's camera angle: 90 looks straight
down, as in our convention), ``weather`` (``"clear"`` | ``"rain"``) and ``frame``. A file name that
does not follow the pattern leaves its metadata unknown (absent) and is logged.

DontCare boxes mark regions the annotators could not label (crowds, unclear objects). They are
kept, labelled ``"DontCare"`` with ``attrs={"ignore": True}``: a detector's trainer typically
masks them, a captioner should not count them as objects; the consumer decides.

``image_id`` is the file stem (e.g. ``"0_100_30_0_03306"``), unique across splits.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from . import _common as c
from .coco import parse_coco_file
from .sample import DataError, SkipReport, ThermalSample

logger = logging.getLogger(__name__)

SOURCE = "hit-uav"
CLASSES = ("Person", "Car", "Bicycle", "OtherVehicle", "DontCare")
IGNORE_LABELS = ("DontCare",)
FILENAME_RE = re.compile(r"^(?P<tod>[01])_(?P<alt>\d+(?:\.\d+)?)_(?P<angle>\d+(?:\.\d+)?)_(?P<weather>[01])_(?P<frame>\w+)$")


def parse_filename(name: str) -> dict[str, Any]:
    """Scene metadata from a HIT-UAV file name (with or without extension); {} if it does not match."""
    m = FILENAME_RE.match(Path(name).stem)
    if not m:
        return {}
    return {
        "time_of_day": "day" if m["tod"] == "0" else "night",
        "altitude_m": float(m["alt"]),
        "view_angle_deg": float(m["angle"]),
        "weather": "clear" if m["weather"] == "0" else "rain",
        "frame": m["frame"],
    }


def _base(root: Path) -> Path:
    root = Path(root)
    if (root / "annotations").is_dir() and not (root / "normal_json").is_dir():
        return root  # given the normal_json folder itself
    return root / "normal_json"


def splits(root: Path) -> list[str]:
    """Split names with an annotation file under ``root``."""
    ann = _base(root) / "annotations"
    if not ann.is_dir():
        raise DataError(f"{ann}: not found; expected HIT-UAV's normal_json/annotations/<split>.json layout")
    return c.sort_splits(p.stem for p in ann.glob("*.json"))


def load(root: Path, split: str | None, report: SkipReport, skip_invalid: bool = False) -> list[ThermalSample]:
    """Read HIT-UAV samples of ``split`` (None = every split), validating every record.

    Raises :class:`DataError` naming the annotation file and record on bad input, unless
    ``skip_invalid``, in which case bad records are dropped and counted in ``report``.
    """
    base = _base(root)
    v = c.Validator(report, skip_invalid)
    samples: list[ThermalSample] = []
    for name in c.check_split(split, splits(root), str(base / "annotations")):
        ann_file = base / "annotations" / f"{name}.json"
        unparsed: list[str] = []

        def meta_fn(rec: dict[str, Any], fname: str, unparsed: list[str] = unparsed) -> dict[str, Any]:
            meta = parse_filename(fname)
            if not meta:
                unparsed.append(fname)
            return meta

        samples += parse_coco_file(
            ann_file,
            base / name,
            name,
            SOURCE,
            v,
            filename_keys=("filename", "file_name"),
            annotation_keys=("annotation", "annotations"),
            known_labels=CLASSES,
            ignore_labels=IGNORE_LABELS,
            meta_fn=meta_fn,
        )
        if unparsed:
            logger.warning(
                "%s: %d file names (e.g. %s) do not follow HIT-UAV's naming; their metadata is unknown",
                ann_file, len(unparsed), unparsed[0],
            )
    return samples
