"""A plain folder of thermal images, with an optional CSV or JSONL file of captions.

``root`` is either a folder or the captions file itself (its folder is then the image folder).
In a folder, the captions file is found by name: ``captions.jsonl``, ``captions.csv``,
``metadata.jsonl`` or ``metadata.csv`` (the last two follow Hugging Face ``imagefolder``); more
than one is an error, none means images only.

Images: every ``.png .jpg .jpeg .tif .tiff .bmp .npy`` file under the folder (recursively, hidden
folders skipped). Sizes come from the file headers; pixels are not decoded. The split is the
row's ``split`` field, else the first folder of the image's path when it is a split name
(``train``, ``val``, ``test``, ...), else ``"all"``. ``image_id`` is the path relative to the
folder, without suffix (e.g. ``"train/img_0001"``).

Captions file, one row per image (CSV with a header row, or one JSON object per line):

``file_name`` (or ``image``, ``filename``, ``path``)  image path relative to the captions file's folder (required)
``global_caption``, ``fine_caption``, ``caption``     captions, stored in ``ThermalSample.captions`` under those keys
``split``                                           overrides the split
``time_of_day``, ``weather``, ``altitude_m``, ``view_angle_deg``, ``ambient_k``, ``scene``   scene metadata
``meta`` (JSONL)                                    scene metadata as an object
``objects`` (JSONL)                                 ``[{"label": ..., "box": [x, y, w, h], "facts"|"attrs": {...}}]``

So a thermgen manifest (``manifest.jsonl``, key ``image``) reads back as a folder dataset.
Rows are validated: a missing image, a duplicate row, a broken line or field, a box outside the
image each raise :class:`DataError` naming the file and line, or are counted when skipping.
Images that no row mentions are kept without captions.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from . import _common as c
from .sample import Box, DataError, SkipReport, ThermalSample

SOURCE = "folder"
CAPTION_FILES = ("captions.jsonl", "captions.csv", "metadata.jsonl", "metadata.csv")
IMAGE_KEYS = ("file_name", "image", "filename", "path")
CAPTION_KEYS = ("global_caption", "fine_caption", "caption")
META_KEYS = ("time_of_day", "weather", "altitude_m", "view_angle_deg", "ambient_k", "scene", "frame")
_NUMERIC_META = ("altitude_m", "view_angle_deg", "ambient_k")


def _locate(root: Path) -> tuple[Path, Path | None]:
    """(image folder, captions file or None)."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in (".csv", ".jsonl"):
            raise DataError(f"{root}: a folder dataset root must be a folder or a .csv/.jsonl captions file")
        return root.parent, root
    if not root.is_dir():
        raise DataError(f"{root}: dataset root does not exist")
    found = [root / n for n in CAPTION_FILES if (root / n).is_file()]
    if len(found) > 1:
        raise DataError(f"{root}: several captions files ({', '.join(p.name for p in found)}); pass the one to use as the root")
    return root, (found[0] if found else None)


def _images(folder: Path) -> list[Path]:
    from thermgen.io import IMAGE_EXTENSIONS

    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(p)
    return out


def _dir_split(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in c.SPLIT_ORDER else "all"


def load(root: Path, split: str | None, report: SkipReport, skip_invalid: bool = False) -> list[ThermalSample]:
    """Read the images under ``root`` (only ``split`` when given), with captions when a file gives them."""
    folder, captions_file = _locate(root)
    v = c.Validator(report, skip_invalid)
    rows = _read_rows(captions_file, v) if captions_file else []

    images = {p.relative_to(folder).as_posix(): p for p in _images(folder)}
    by_rel: dict[str, tuple[str, dict[str, Any]]] = {}
    for where, row in rows:
        key = next((k for k in IMAGE_KEYS if k in row), None)
        name = row.get(key) if key else None
        if not isinstance(name, str) or not name.strip():
            v.problem(c.BROKEN_RECORD, where, f"needs an image path in one of {', '.join(IMAGE_KEYS)}")
            continue
        path = (folder / name).resolve()
        try:
            rel = path.relative_to(folder.resolve()).as_posix()
        except ValueError:
            rel = None
        if rel is None or rel not in images:
            if path.is_file():
                v.problem(c.BROKEN_RECORD, where, f"image {name!r} is outside {folder} or not an image type")
            else:
                v.problem(c.MISSING_IMAGE, where, f"{folder / name} does not exist")
            continue
        if rel in by_rel:
            v.problem(c.DUPLICATE, where, f"image {name!r} already described at {by_rel[rel][0]}")
            continue
        by_rel[rel] = (where, row)

    from thermgen.io import image_size

    samples: list[ThermalSample] = []
    for rel, path in images.items():
        where, row = by_rel.get(rel, (str(path), {}))
        sample_split = row.get("split") or _dir_split(Path(rel))
        if not isinstance(sample_split, str):
            v.problem(c.BROKEN_RECORD, where, f"split must be a string, got {sample_split!r}")
            continue
        if split is not None and sample_split != split:
            continue
        try:
            width, height = image_size(path)
        except DataError as e:
            v.problem(c.UNREADABLE_IMAGE, where, str(e))
            continue
        meta = _row_meta(row, where, v)
        if meta is None:
            continue
        boxes = _row_boxes(row, width, height, where, v)
        if boxes is None:
            continue
        captions = {k: row[k] for k in CAPTION_KEYS if isinstance(row.get(k), str) and row[k].strip()}
        samples.append(
            ThermalSample(
                image_path=path.resolve(),
                width=width,
                height=height,
                boxes=boxes,
                meta=meta,
                split=sample_split,
                source=SOURCE,
                image_id=str(Path(rel).with_suffix("").as_posix()),
                captions=captions or None,
            )
        )
    if split is not None and not samples and not report.total:
        raise DataError(f"{root}: no images in split {split!r}")
    return samples


def _read_rows(path: Path, v: c.Validator) -> list[tuple[str, dict[str, Any]]]:
    """[(where, row)] with ``where`` = "file: line N"."""
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if path.suffix.lower() == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}: line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                v.problem(c.BROKEN_RECORD, where, f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(row, dict):
                v.problem(c.BROKEN_RECORD, where, f"expected a JSON object, got {type(row).__name__}")
                continue
            rows.append((where, row))
        return rows
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not any(k in reader.fieldnames for k in IMAGE_KEYS):
        raise DataError(f"{path}: line 1: the CSV header needs an image column ({', '.join(IMAGE_KEYS)}), got {reader.fieldnames}")
    for row in reader:
        where = f"{path}: line {reader.line_num}"
        if None in row or any(v_ is None for v_ in row.values()):
            v.problem(c.BROKEN_RECORD, where, f"expected {len(reader.fieldnames)} fields")
            continue
        rows.append((where, {k: val for k, val in row.items() if val != ""}))
    return rows


def _row_meta(row: dict[str, Any], where: str, v: c.Validator) -> dict[str, Any] | None:
    meta: dict[str, Any] = {}
    if "meta" in row:
        if not isinstance(row["meta"], dict):
            v.problem(c.BROKEN_RECORD, where, f"meta must be an object, got {row['meta']!r}")
            return None
        meta.update(row["meta"])
    for key in META_KEYS:
        if key in row:
            val = row[key]
            if key in _NUMERIC_META and isinstance(val, str):
                try:
                    val = float(val)
                except ValueError:
                    pass  # meta_problem names it
            meta[key] = val
    problem = c.meta_problem(meta)
    if problem:
        v.problem(c.BROKEN_RECORD, where, problem)
        return None
    return c.clean_meta(meta)


def _row_boxes(row: dict[str, Any], width: int, height: int, where: str, v: c.Validator) -> list[Box] | None:
    objects = row.get("objects", [])
    if not isinstance(objects, list):
        v.problem(c.BROKEN_RECORD, where, f"objects must be a list, got {type(objects).__name__}")
        return None
    boxes: list[Box] = []
    for k, obj in enumerate(objects):
        owhere = f"{where}: objects[{k}]"
        if not isinstance(obj, dict) or not isinstance(obj.get("label"), str) or not obj["label"]:
            v.problem(c.BROKEN_RECORD, owhere, "needs a string 'label' and a 'box'")
            continue
        xywh = c.check_box(obj.get("box"), width, height, owhere, v)
        if xywh is None:
            continue
        attrs = obj.get("attrs", obj.get("facts", {}))
        boxes.append(Box(label=obj["label"], xywh=xywh, attrs=dict(attrs) if isinstance(attrs, dict) else {}))
    return boxes
