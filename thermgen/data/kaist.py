"""KAIST Multispectral Pedestrian (Hwang et al., CVPR 2015): thermal (LWIR) frames and their
per-image text annotations.

Layout::

    annotations/setXX/VYYY/I#####.txt        Piotr Dollar's bbGt format, version 3
    images/setXX/VYYY/lwir/I#####.jpg         thermal (640x512); visible/ beside it is ignored
    imageSets/<name>.txt                      optional lists of "setXX/VYYY/I#####" lines

Annotation file::

    % bbGt version=3
    person 215 214 20 40 0 0 0 0 0 0 0

Fields per line: ``label x y w h occ xv yv wv hv ign ang`` (box ``[x, y, w, h]`` in pixels;
``occ`` 0 none / 1 partial / 2 heavy; ``ign`` 1 = ignore region). Labels: ``person``,
``people`` (a group), ``cyclist``, ``person?`` (ambiguous; also ``person?a``). As in the KAIST
benchmark, only ``person`` is a target: the other labels and ``ign=1`` boxes are kept with
``attrs={"ignore": True}``; ``occlusion`` is kept in attrs when non-zero.

Splits: ``train`` = set00-05, ``test`` = set06-11 (the official split); every
``imageSets/<name>.txt`` is a further split of that name (e.g. ``train-all-02``).
Metadata from the set id (KAIST's capture table): ``time_of_day`` day for set00-02 and set06-08,
night for set03-05 and set09-11; ``scene`` campus / road / downtown; ``frame`` ``"setXX/VYYY/I#####"``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import _common as c
from .sample import Box, DataError, SkipReport, ThermalSample

SOURCE = "kaist"
LABELS = ("person", "people", "cyclist", "person?", "person?a")
TARGET_LABELS = ("person",)
HEADER = "% bbGt version=3"
_SET_RE = re.compile(r"^set(\d{2})$")
_SCENES = ("campus", "road", "downtown")


def set_meta(set_name: str) -> dict[str, Any]:
    """Scene metadata of a KAIST set ("set00" .. "set11"); {} for an unknown set name."""
    m = _SET_RE.match(set_name)
    if not m or int(m[1]) > 11:
        return {}
    k = int(m[1])
    return {"time_of_day": "day" if k % 6 < 3 else "night", "scene": _SCENES[k % 3]}


def official_split(set_name: str) -> str | None:
    m = _SET_RE.match(set_name)
    if not m:
        return None
    return "train" if int(m[1]) <= 5 else "test"


def _check_root(root: Path) -> None:
    if not (root / "annotations").is_dir():
        raise DataError(f"{root / 'annotations'}: not found; expected KAIST's annotations/setXX/VYYY/I#####.txt layout")


def splits(root: Path) -> list[str]:
    """"train"/"test" for the sets present, plus every imageSets/<name>.txt."""
    root = Path(root)
    _check_root(root)
    names = {official_split(d.name) for d in (root / "annotations").iterdir() if d.is_dir()} - {None}
    if (root / "imageSets").is_dir():
        names |= {p.stem for p in (root / "imageSets").glob("*.txt")}
    return c.sort_splits(names)


def load(root: Path, split: str | None, report: SkipReport, skip_invalid: bool = False) -> list[ThermalSample]:
    """Read KAIST thermal samples of ``split`` (None = train and test), validating every file and line."""
    root = Path(root)
    v = c.Validator(report, skip_invalid)
    available = splits(root)
    wanted = c.check_split(split, available, str(root))
    if split is None:
        wanted = [s for s in wanted if s in ("train", "test")] or wanted  # lists overlap train/test

    ann_root = root / "annotations"
    records: list[tuple[str, str]] = []  # (split, "setXX/VYYY/I#####")
    for name in wanted:
        if name in ("train", "test") and not (root / "imageSets" / f"{name}.txt").is_file():
            for set_dir in sorted(d for d in ann_root.iterdir() if d.is_dir() and official_split(d.name) == name):
                for txt in sorted(set_dir.glob("V*/*.txt")):
                    records.append((name, f"{set_dir.name}/{txt.parent.name}/{txt.stem}"))
        else:
            list_file = root / "imageSets" / f"{name}.txt"
            for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
                key = line.strip()
                if not key:
                    continue
                if not re.fullmatch(r"set\d{2}/V\d{3}/[^/\s]+", key):
                    v.problem(c.BROKEN_RECORD, f"{list_file}: line {lineno}", f"expected 'setXX/VYYY/I#####', got {key!r}")
                    continue
                records.append((name, key))

    sizes: dict[Path, tuple[int, int]] = {}
    samples: list[ThermalSample] = []
    for name, key in records:
        sample = _read_record(root, key, name, v, sizes)
        if sample is not None:
            samples.append(sample)
    return samples


def _read_record(root: Path, key: str, split: str, v: c.Validator, sizes: dict[Path, tuple[int, int]]) -> ThermalSample | None:
    set_name, video, frame = key.split("/")
    txt = root / "annotations" / set_name / video / f"{frame}.txt"
    image = root / "images" / set_name / video / "lwir" / f"{frame}.jpg"
    if not txt.is_file():
        v.problem(c.MISSING_ANNOTATION, str(txt), f"no annotation file for {key}")
        return None
    if not image.is_file():
        v.problem(c.MISSING_IMAGE, str(txt), f"{image} does not exist")
        return None
    # Every frame of a video has the same size: read one header per video, not per frame.
    if image.parent not in sizes:
        from thermgen.io import image_size

        try:
            sizes[image.parent] = image_size(image)
        except DataError as e:
            v.problem(c.UNREADABLE_IMAGE, str(txt), str(e))
            return None
    width, height = sizes[image.parent]

    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        v.problem(c.BROKEN_RECORD, str(txt), f"cannot read ({e})")
        return None
    if not lines or not lines[0].strip().startswith(HEADER):
        v.problem(c.BROKEN_RECORD, f"{txt}: line 1", f"expected the header {HEADER!r}, got {lines[0] if lines else ''!r}")
        return None

    boxes: list[Box] = []
    for lineno, line in enumerate(lines[1:], 2):
        fields = line.split()
        if not fields:
            continue
        where = f"{txt}: line {lineno}"
        label = fields[0]
        if label not in LABELS:
            v.problem(c.UNKNOWN_LABEL, where, f"{label!r} is not one of {', '.join(LABELS)}")
            continue
        try:
            numbers = [float(f) for f in fields[1:]]
        except ValueError:
            v.problem(c.BROKEN_RECORD, where, f"fields after the label must be numbers, got {line.strip()!r}")
            continue
        if len(numbers) not in (4, 11):
            v.problem(c.BROKEN_RECORD, where, f"expected 'label x y w h' and optionally 7 more fields (bbGt v3), got {len(fields)} fields")
            continue
        xywh = c.check_box(numbers[:4], width, height, where, v)
        if xywh is None:
            continue
        attrs: dict[str, Any] = {}
        if len(numbers) == 11:
            if numbers[4]:
                attrs["occlusion"] = int(numbers[4])
            if numbers[9]:
                attrs["ignore"] = True
        if label not in TARGET_LABELS:
            attrs["ignore"] = True
        boxes.append(Box(label=label, xywh=xywh, attrs=attrs))

    return ThermalSample(
        image_path=image.resolve(),
        width=width,
        height=height,
        boxes=boxes,
        meta={**set_meta(set_name), "frame": key},
        split=split,
        source=SOURCE,
        image_id=f"{set_name}_{video}_{frame}",
    )
