"""COCO-format thermal datasets: FLIR ADAS v1 and v2 thermal annotations, and plain COCO layouts.

Layouts found under ``root`` (first match wins; a COCO JSON file given as ``root`` is read alone):

FLIR ADAS v1 (``FLIR_ADAS_1_3``)::

    {train,val,video}/thermal_annotations.json      "file_name": "thermal_8_bit/FLIR_00001.jpeg"
    {train,val,video}/thermal_8_bit/*.jpeg          (thermal_16_bit/*.tiff beside them)

FLIR ADAS v2 (``FLIR_ADAS_v2``; the RGB folders are ignored)::

    images_thermal_{train,val}/coco.json            "file_name": "data/video-...-frame-000000-....jpg"
    video_thermal_test/coco.json                    -> split "test"

Plain COCO::

    annotations/instances_<split>.json or annotations/<split>.json
    images under <split>/, images/<split>/ or root, in that order

``file_name`` is resolved against the folder of the images (the split folder for FLIR). Boxes are
COCO ``[x, y, w, h]`` in pixels. Labels keep the dataset's category names (FLIR: ``person``,
``bike``, ``car``, ``motor``, ``other vehicle``, ...). ``iscrowd`` boxes are kept with
``attrs={"ignore": True, "iscrowd": True}``. COCO files carry no scene metadata, so ``meta`` is
empty (unknown) unless an image record has ``time_of_day``/``weather`` fields of our vocabulary.

Every record is validated (see :mod:`thermgen.data._common` for the raise-or-skip policy).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import _common as c
from .sample import Box, DataError, SkipReport, ThermalSample

SOURCE = "coco"

_V2_DIR = re.compile(r"^(?:images|video)_thermal_(?P<split>\w+)$")


def discover(root: Path) -> dict[str, tuple[Path, Path]]:
    """``{split: (annotation JSON, image folder)}`` for the layouts in the module docstring."""
    root = Path(root)
    if root.is_file():
        return {_split_name_for(root): (root, root.parent)}
    if not root.is_dir():
        raise DataError(f"{root}: dataset root does not exist")
    found: dict[str, tuple[Path, Path]] = {}
    for ann in sorted(root.glob("*/thermal_annotations.json")):  # FLIR v1
        found[ann.parent.name] = (ann, ann.parent)
    for ann in sorted(root.glob("*/coco.json")):  # FLIR v2
        m = _V2_DIR.match(ann.parent.name)
        if m:
            found[m["split"]] = (ann, ann.parent)
    if not found:
        for ann in sorted((root / "annotations").glob("*.json")):  # plain COCO
            split = ann.stem[len("instances_"):] if ann.stem.startswith("instances_") else ann.stem
            image_dir = next((d for d in (root / split, root / "images" / split) if d.is_dir()), root)
            found[split] = (ann, image_dir)
    if not found:
        for name in ("coco.json", "thermal_annotations.json"):  # root is one split's folder
            if (root / name).is_file():
                found[_split_name_for(root / name)] = (root / name, root)
                break
    if not found:
        raise DataError(
            f"{root}: no COCO annotation file found (looked for */thermal_annotations.json (FLIR v1), "
            "images_thermal_*/coco.json (FLIR v2), annotations/*.json, coco.json)"
        )
    return {k: found[k] for k in c.sort_splits(found)}


def _split_name_for(ann: Path) -> str:
    m = _V2_DIR.match(ann.parent.name)
    if m:
        return m["split"]
    if ann.parent.name in c.SPLIT_ORDER:
        return ann.parent.name
    stem = ann.stem
    return stem[len("instances_"):] if stem.startswith("instances_") else ("all" if stem in ("coco", "thermal_annotations") else stem)


def splits(root: Path) -> list[str]:
    """Split names with an annotation file under ``root``."""
    return list(discover(root))


def load(root: Path, split: str | None, report: SkipReport, skip_invalid: bool = False) -> list[ThermalSample]:
    """Read COCO-format thermal samples of ``split`` (None = every split), validating every record."""
    found = discover(root)
    v = c.Validator(report, skip_invalid)
    samples: list[ThermalSample] = []
    for name in c.check_split(split, list(found), str(root)):
        ann_file, image_dir = found[name]
        samples += parse_coco_file(ann_file, image_dir, name, SOURCE, v, meta_fn=_meta_from_record)
    return samples


def _meta_from_record(rec: dict[str, Any], file_name: str) -> dict[str, Any]:
    meta = {k: rec[k] for k in ("time_of_day", "weather", "scene") if k in rec}
    return meta


# ---------------------------------------------------------------------------------------------
# The COCO-like parser, shared with HIT-UAV (whose key names differ).


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; DataError naming the file, line and column when it is broken."""
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    return data


def list_field(data: dict[str, Any], keys: Iterable[str], path: Path) -> list[Any]:
    keys = tuple(keys)
    for key in keys:
        if key in data:
            if not isinstance(data[key], list):
                raise DataError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
            return data[key]
    raise DataError(f"{path}: missing key {' or '.join(map(repr, keys))}")


def categories_of(data: dict[str, Any], path: Path, known: Iterable[str] | None = None) -> dict[Any, str]:
    """``{category id: name}``; with ``known``, any other name is an error naming the entry."""
    known = tuple(known) if known is not None else None
    out: dict[Any, str] = {}
    for i, cat in enumerate(list_field(data, ("categories",), path)):
        if not isinstance(cat, dict) or "id" not in cat or isinstance(cat["id"], (dict, list)) or not isinstance(cat.get("name"), str):
            raise DataError(f"{path}: categories[{i}]: need an object with a scalar 'id' and a string 'name', got {cat!r}")
        if known is not None and cat["name"] not in known:
            raise DataError(f"{path}: categories[{i}]: unknown class {cat['name']!r} (known: {', '.join(known)})")
        out[cat["id"]] = cat["name"]
    return out


def parse_coco_file(
    ann_file: Path,
    image_dir: Path,
    split: str,
    source: str,
    v: c.Validator,
    *,
    filename_keys: tuple[str, ...] = ("file_name",),
    annotation_keys: tuple[str, ...] = ("annotations",),
    known_labels: Iterable[str] | None = None,
    ignore_labels: Iterable[str] = (),
    meta_fn: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
) -> list[ThermalSample]:
    """Read one COCO-like annotation file into samples, validating every image and box record.

    filename_keys / annotation_keys: accepted key names (HIT-UAV uses "filename" / "annotation").
    known_labels: restrict category names (None = any). ignore_labels: boxes kept with
    ``attrs["ignore"] = True``. meta_fn(image record, file name) -> scene metadata.
    """
    data = read_json(ann_file)
    images = list_field(data, ("images",), ann_file)
    annotations = list_field(data, annotation_keys, ann_file)
    categories = categories_of(data, ann_file, known_labels)
    ignore_labels = set(ignore_labels)
    key_name = " or ".join(repr(k) for k in filename_keys)

    by_id: dict[Any, ThermalSample] = {}
    listed_ids = {r.get("id") for r in images if isinstance(r, dict) and not isinstance(r.get("id"), (dict, list))}
    seen_names: set[str] = set()
    for i, rec in enumerate(images):
        where = f"{ann_file}: images[{i}]"
        if not isinstance(rec, dict):
            v.problem(c.BROKEN_RECORD, where, f"expected an object, got {type(rec).__name__}")
            continue
        fname = next((rec[k] for k in filename_keys if k in rec), None)
        img_id = rec.get("id")
        where += f" (id={img_id!r}, {filename_keys[0]}={fname!r})"
        width, height = rec.get("width"), rec.get("height")
        if not isinstance(fname, str) or not fname:
            v.problem(c.BROKEN_RECORD, where, f"missing {key_name}")
            continue
        if img_id is None or isinstance(img_id, (dict, list, bool)):
            v.problem(c.BROKEN_RECORD, where, "missing or invalid 'id'")
            continue
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            v.problem(c.BROKEN_RECORD, where, f"width/height must be positive integers, got {width!r}x{height!r}")
            continue
        if img_id in by_id or fname in seen_names:
            v.problem(c.DUPLICATE, where, "image id or file name listed twice")
            continue
        path = image_dir / fname
        if not path.is_file():
            v.problem(c.MISSING_IMAGE, where, f"{path} does not exist")
            continue
        meta = meta_fn(rec, fname) if meta_fn else {}
        problem = c.meta_problem(meta)
        if problem:
            v.problem(c.BROKEN_RECORD, where, problem)
            continue
        meta = c.clean_meta(meta)
        seen_names.add(fname)
        by_id[img_id] = ThermalSample(
            image_path=path.resolve(),
            width=int(width),
            height=int(height),
            boxes=[],
            meta=meta,
            split=split,
            source=source,
            image_id=Path(fname).stem,
        )

    for i, rec in enumerate(annotations):
        where = f"{ann_file}: {annotation_keys[0]}[{i}]"
        if not isinstance(rec, dict):
            v.problem(c.BROKEN_RECORD, where, f"expected an object, got {type(rec).__name__}")
            continue
        where += f" (id={rec.get('id')!r}, image_id={rec.get('image_id')!r})"
        missing = [k for k in ("image_id", "bbox", "category_id") if k not in rec]
        if missing:
            v.problem(c.BROKEN_RECORD, where, f"missing {', '.join(map(repr, missing))}")
            continue
        if isinstance(rec["image_id"], (dict, list)) or isinstance(rec["category_id"], (dict, list)):
            v.problem(c.BROKEN_RECORD, where, "image_id and category_id must be scalars")
            continue
        sample = by_id.get(rec["image_id"])
        if sample is None:
            if rec["image_id"] in listed_ids:
                continue  # its image was skipped (and counted) above; its boxes go with it
            v.problem(c.BROKEN_RECORD, where, f"image_id {rec['image_id']!r} is not in 'images'")
            continue
        label = categories.get(rec["category_id"])
        if label is None:
            v.problem(c.UNKNOWN_LABEL, where, f"category_id {rec['category_id']!r} is not in 'categories' {sorted(categories, key=str)}")
            continue
        xywh = c.check_box(rec["bbox"], sample.width, sample.height, where, v)
        if xywh is None:
            continue
        attrs: dict[str, Any] = {}
        if label in ignore_labels:
            attrs["ignore"] = True
        if rec.get("iscrowd") in (1, True):
            attrs.update(ignore=True, iscrowd=True)
        sample.boxes.append(Box(label=label, xywh=xywh, attrs=attrs))
    return list(by_id.values())


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
