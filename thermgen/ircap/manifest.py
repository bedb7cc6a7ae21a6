"""The caption manifest (contract 1): JSON Lines, one image per line, schema version 1.

Each line is one JSON object::

    {
      "schema_version": 1,                      int, this module's SCHEMA_VERSION
      "id": "hit-uav/test/0_100_30_0_03307",    str, "<source>/<split>/<image_id>", unique in the file
      "image": "../data/.../0_100_30_0_03307.jpg",  str, relative to the manifest's folder, or absolute
      "split": "test",                          str
      "source": "hit-uav",                      str, the dataset adapter's name
      "width": 640, "height": 512,              int, pixels
      "global_caption": "An infrared thermal image of ...",   str, <= 77 open_clip tokens
      "fine_caption": "Thermal infrared image ...",           str, <= 77 open_clip tokens
      "objects": [                              list, one entry per annotated box
        {"label": "Car", "box": [x, y, w, h],   str; 4 numbers, pixels, top-left origin
         "facts": {"polarity": "cold", "vehicle_state": "parked", ...}}   dict, fact name -> value
      ],
      "meta": {"time_of_day": "night", ...},   dict, scene metadata (thermgen.data.sample keys)
      "measurements": {"image": {...}, "objects": [...], "radiometric": false},
                                                dict, the numbers the captions were derived from
                                                (thermgen.ircap.measure)
      "captioner": {"name": "ircap-rules", "version": "1.0", "seed": 0}   dict: name str, version str, seed int
    }

Optional keys (validated when present): ``"facts"`` (list of scene/object fact dicts with their
rule and evidence), ``"stated"`` (the facts each caption actually states, with the object indices
they cover), ``"tokens"`` (``{"global": int, "fine": int}``), ``"source_captions"`` (captions
shipped with the dataset, e.g. by the folder adapter, kept beside ours), ``"caption_variants"``
(``{"global": [str, ...], "fine": [str, ...]}``: the same facts in other phrasings, for training-time
text augmentation; ``thermgen.caption --variants K``). Readers must ignore keys they do not know, so the
schema can grow without a version bump; removing or retyping a key bumps ``SCHEMA_VERSION``.

:func:`read_manifest` validates every line and raises :class:`thermgen.data.sample.DataError`
naming the file, the line number and the key at fault (a truncated JSON line, a missing key, a
wrong type, a duplicate id, an unsupported schema version).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from thermgen.data.sample import DataError

SCHEMA_VERSION = 1

_NUM = (int, float)
#: Required keys and their JSON types.
REQUIRED: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "id": (str,),
    "image": (str,),
    "split": (str,),
    "source": (str,),
    "width": (int,),
    "height": (int,),
    "global_caption": (str,),
    "fine_caption": (str,),
    "objects": (list,),
    "meta": (dict,),
    "measurements": (dict,),
    "captioner": (dict,),
}
OPTIONAL: dict[str, tuple[type, ...]] = {
    "facts": (list,), "stated": (list,), "tokens": (dict,), "source_captions": (dict,), "caption_variants": (dict,),
}
_TYPE_NAMES = {int: "integer", float: "number", str: "string", list: "array", dict: "object", bool: "boolean"}


def _tname(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _is(v: Any, types: tuple[type, ...]) -> bool:
    # JSON booleans are Python ints: never accept True for an integer field.
    return isinstance(v, types) and not (isinstance(v, bool) and bool not in types)


def validate_record(rec: Any, where: str = "record") -> dict[str, Any]:
    """Check one manifest record against schema version 1; return it unchanged.

    Raises:
        DataError: naming ``where`` (e.g. ``"manifest.jsonl line 12"``) and the offending key.
    """
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key, types in REQUIRED.items():
        if key not in rec:
            raise DataError(f"{where}: missing key {key!r}")
        if not _is(rec[key], types):
            raise DataError(f"{where}: key {key!r} must be {_tname(types)}, got {type(rec[key]).__name__} {rec[key]!r:.60}")
    for key, types in OPTIONAL.items():
        if key in rec and not _is(rec[key], types):
            raise DataError(f"{where}: key {key!r} must be {_tname(types)}, got {type(rec[key]).__name__}")
    if rec["schema_version"] != SCHEMA_VERSION:
        raise DataError(f"{where}: key 'schema_version' is {rec['schema_version']}, this reader supports {SCHEMA_VERSION}")
    for key in ("id", "image", "global_caption", "fine_caption"):
        if not rec[key].strip():
            raise DataError(f"{where}: key {key!r} is empty")
    if rec["width"] <= 0 or rec["height"] <= 0:
        raise DataError(f"{where}: keys 'width'/'height' must be positive, got {rec['width']}x{rec['height']}")
    for j, obj in enumerate(rec["objects"]):
        at = f"{where}: objects[{j}]"
        if not isinstance(obj, dict):
            raise DataError(f"{at} must be an object, got {type(obj).__name__}")
        for key, types in (("label", (str,)), ("box", (list,)), ("facts", (dict,))):
            if key not in obj:
                raise DataError(f"{at}: missing key {key!r}")
            if not _is(obj[key], types):
                raise DataError(f"{at}: key {key!r} must be {_tname(types)}, got {type(obj[key]).__name__}")
        box = obj["box"]
        if len(box) != 4 or not all(_is(v, _NUM) for v in box):
            raise DataError(f"{at}: key 'box' must be 4 numbers [x, y, w, h], got {box!r}")
    cap = rec["captioner"]
    for key, types in (("name", (str,)), ("version", (str,)), ("seed", (int,))):
        if key not in cap:
            raise DataError(f"{where}: captioner: missing key {key!r}")
        if not _is(cap[key], types):
            raise DataError(f"{where}: captioner: key {key!r} must be {_tname(types)}, got {type(cap[key]).__name__}")
    for kind, texts in rec.get("caption_variants", {}).items():
        if kind not in ("global", "fine"):
            raise DataError(f"{where}: caption_variants: unknown key {kind!r} (expected 'global' or 'fine')")
        if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
            raise DataError(f"{where}: caption_variants: key {kind!r} must be an array of non-empty strings")
    if "tokens" in rec:
        for key in ("global", "fine"):
            if key in rec["tokens"] and not _is(rec["tokens"][key], (int,)):
                raise DataError(f"{where}: tokens: key {key!r} must be integer")
    return rec


def iter_manifest(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for every non-blank line, validating each (1-based line numbers)."""
    path = Path(path)
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot open manifest ({e.strerror or e})") from e
    seen: dict[str, int] = {}
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno}); truncated line?") from e
            validate_record(rec, where)
            if rec["id"] in seen:
                raise DataError(f"{where}: key 'id' {rec['id']!r} duplicates line {seen[rec['id']]}")
            seen[rec["id"]] = lineno
            yield lineno, rec


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a whole manifest; every line is checked before anything is returned."""
    return [rec for _, rec in iter_manifest(path)]


def resolve_image(rec: dict[str, Any], manifest_path: str | Path) -> Path:
    """Absolute path of a record's image (relative paths are relative to the manifest's folder)."""
    p = Path(rec["image"])
    return p if p.is_absolute() else (Path(manifest_path).resolve().parent / p)


def image_ref(image_path: str | Path, manifest_path: str | Path) -> str:
    """The ``image`` value to store: relative to the manifest's folder when on the same drive, else absolute."""
    image_path = Path(image_path).resolve()
    base = Path(manifest_path).resolve().parent
    try:
        return Path(os.path.relpath(image_path, base)).as_posix()
    except ValueError:  # different drive (Windows)
        return image_path.as_posix()


def write_manifest(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Validate and write records as JSON Lines (atomic: a temporary file renamed at the end).

    Returns the number of records written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    seen: set[str] = set()
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for n, rec in enumerate(records, start=1):
                validate_record(rec, f"record {n} ({rec.get('id', '?') if isinstance(rec, dict) else '?'})")
                if rec["id"] in seen:
                    raise DataError(f"record {n}: key 'id' {rec['id']!r} is duplicated")
                seen.add(rec["id"])
                try:  # strict JSON: NaN/Infinity would make the line unreadable for other tools
                    line = json.dumps(rec, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
                except (TypeError, ValueError) as e:
                    raise DataError(f"record {n} ({rec['id']}): {e}") from e
                fh.write(line + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written manifest behind
        raise
    os.replace(tmp, path)
    return n
