"""Write a synthetic dataset folder (:func:`generate`) and read it back as samples (:func:`load`).

Folder layout (format "thermgen-synthetic", version 1)::

    OUT/synthetic.json              dataset card: format, version, seed, n, size, scene options, split counts,
                                    radiometric calibration, camera/physics summary; written
                                    last, so its presence with "complete": true marks a finished set
    OUT/<split>.jsonl               ground truth, one JSON object per image (below)
    OUT/images/<split>/<id>.png     16-bit single-channel PNG, T-linear counts (T = 220 + 0.002 * count)

One ground-truth line::

    {"image_id": "000042", "image": "images/train/000042.png", "split": "train",
     "width": 128, "height": 128, "index": 42, "seed": 0,
     "objects": [{"label": "Car", "box": [x, y, w, h], "state": "running", "temperature_k": ...,
                  "max_temperature_k": ..., "emissivity": ..., "hot": true, "contrast_k": ...,
                  "hotspot_box": [x, y, w, h] | null, "surface": "road", "surface_index": 1,
                  "visible_fraction": ..., "distance_m": ..., "heading_deg": ..., "parts": [...]}],
     "meta": {"time_of_day", "weather", "ambient_k", "altitude_m", "view_angle_deg", "scene",
              "view", "fov_deg", "solar_load", "wet", "extinction_per_km", "sun_elevation_deg"
              (day only), "sky": {...}, "surfaces": [{kind, material, state, temperature_k,
              emissivity, area_fraction, shaded_fraction}], "structures", "camera",
              "unannotated_objects"},
     "radiometric": {"kelvin_per_count": 0.002, "kelvin_offset": 220.0}, "netd_k": 0.05,
     "generator": {"name": "thermgen-synthetic", "version": "1"}}

Boxes are [x, y, w, h] in pixels (top-left origin) around each object's visible pixels.
Scene i is drawn from ``numpy.random.default_rng([seed, i])`` alone, so a scene does not depend
on n, on the split it lands in or on the number of worker processes; the same seed gives
byte-identical files.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..sample import Box, DataError, SkipReport, ThermalSample, as_path
from . import radiometry as R
from .materials import sample_conditions
from .objects import LABELS
from .scene import GENERATOR, SCENE_OPTIONS, check_object_scale, render_scene

FORMAT = "thermgen-synthetic"
FORMAT_VERSION = 1
CARD = "synthetic.json"
DEFAULT_SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))

log = logging.getLogger(__name__)


def split_counts(n: int, splits: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Exact image counts per split (largest remainder), every split with a share getting >= 1 when n allows."""
    names = [s for s, _ in splits]
    fracs = np.array([f for _, f in splits], dtype=float)
    raw = fracs * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    # Small n: take one image from the largest split for each empty split that asked for a share.
    for i in np.flatnonzero((counts == 0) & (fracs > 0)):
        j = int(np.argmax(counts))
        if counts[j] > 1:
            counts[j] -= 1
            counts[i] += 1
    return dict(zip(names, counts.tolist()))


def _check_splits(splits: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    try:
        out = [(str(name), float(frac)) for name, frac in splits]
    except (TypeError, ValueError):
        raise ValueError(f"splits must be (name, fraction) pairs, got {splits!r}") from None
    names = [n for n, _ in out]
    if not out or len(set(names)) != len(names):
        raise ValueError(f"splits must name each split once, got {names}")
    for name, frac in out:
        if not name or "/" in name or name.startswith(".") or not (0.0 <= frac <= 1.0):
            raise ValueError(f"split {name!r}: need a plain folder name and a fraction in [0, 1], got {frac}")
    total = sum(f for _, f in out)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total:g} for {out}")
    return out


def _scene_line(args: tuple[int, int, int, str, Path, dict[str, Any]]) -> dict[str, Any]:
    from thermgen.io import write_png16

    index, seed, size, split, out, options = args
    image, gt = render_scene(np.random.default_rng([seed, index]), size, **options)
    image_id = f"{index:06d}"
    rel = f"images/{split}/{image_id}.png"
    write_png16(out / rel, image)
    gt["meta"]["frame"] = image_id
    return {"image_id": image_id, "image": rel, "split": split, "index": index, "seed": seed} | gt


def generate(
    out: Path,
    n: int,
    size: int = 128,
    seed: int = 0,
    splits: Sequence[tuple[str, float]] = DEFAULT_SPLITS,
    progress: bool = True,
    workers: int = 1,
    scene_options: dict[str, Any] | None = None,
) -> Path:
    """Write ``n`` synthetic scenes of ``size`` x ``size`` pixels to the folder ``out``.

    splits: (name, fraction) pairs summing to 1; counts are exact (largest remainder) and images are
        assigned to splits by a permutation drawn from ``seed``.
    workers: processes to render with (the files do not depend on it).
    scene_options: keyword options of :func:`render_scene` applied to every scene, e.g. a camera's
        flight envelope ``{"altitude_range_m": (60, 130), "view_angle_range_deg": (30, 90)}`` and
        ``{"object_scale": 2}``; recorded in the dataset card.
    Returns the dataset folder. Refuses to write into a non-empty folder that is not a synthetic
    dataset; an earlier synthetic dataset there is replaced.
    """
    from tqdm.auto import tqdm

    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8 pixels, got {size!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    split_list = _check_splits(splits)
    options = check_scene_options(scene_options)
    out = as_path(out)
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        if (out / CARD).is_file():
            _remove_previous(out)
        elif any(out.iterdir()):
            raise DataError(f"{out}: folder is not empty and holds no {CARD}; refusing to write a synthetic dataset into it")
    out.mkdir(parents=True, exist_ok=True)

    counts = split_counts(int(n), split_list)
    order = np.random.default_rng([seed, 0x5B117]).permutation(int(n))
    assign: list[str] = [""] * int(n)
    start = 0
    for name, count in counts.items():
        for i in order[start:start + count]:
            assign[int(i)] = name
        start += count
    jobs = [(i, int(seed), int(size), assign[i], out, options) for i in range(int(n))]

    t0 = time.perf_counter()
    lines: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc=f"synthetic scenes -> {out.name}", unit="img", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=int(workers)) as pool:
            for line in pool.map(_scene_line, jobs, chunksize=16):
                lines.append(line)
                bar.update()
    else:
        for job in jobs:
            lines.append(_scene_line(job))
            bar.update()
    bar.close()
    seconds = time.perf_counter() - t0

    labels: dict[str, dict[str, int]] = {name: {lab: 0 for lab in LABELS} for name in counts}
    for name in counts:
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for line in lines:
                if line["split"] == name:
                    f.write(json.dumps(line, sort_keys=True) + "\n")
                    for o in line["objects"]:
                        labels[name][o["label"]] += 1
    card = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "generator": dict(GENERATOR),
        "complete": True,
        "seed": int(seed),
        "n": int(n),
        "size": int(size),
        "scene_options": scene_options_json(options),
        "splits": counts,
        "boxes_per_label": labels,
        "labels": list(LABELS),
        "radiometric": dict(R.CALIBRATION),
        "band_um": list(R.BAND_UM),
        "image_format": "16-bit PNG, single channel, white-hot, T-linear counts: T[K] = kelvin_offset + kelvin_per_count * count",
        "physics": "see the docstrings of thermgen.data.synthetic.{radiometry,materials,scene}",
    }
    # Written last: a folder without a complete card is an interrupted run.
    (out / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("wrote %d synthetic scenes (%s) to %s in %.1f s", n, counts, out, seconds)
    return out


def check_scene_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Validate dataset-wide scene options by rendering nothing: unknown names and bad values raise ValueError."""
    options = dict(options or {})
    unknown = set(options) - set(SCENE_OPTIONS)
    if unknown:
        raise ValueError(f"unknown scene option(s) {sorted(unknown)}; allowed: {', '.join(SCENE_OPTIONS)}")
    # one draw of the conditions checks the fixed choices and the flight envelope with the renderer's own messages
    drawn = ("time_of_day", "weather", "scene", "view", "altitude_range_m", "view_angle_range_deg")
    sample_conditions(np.random.default_rng(0), **{k: options[k] for k in drawn if options.get(k) is not None})
    for key in ("altitude_range_m", "view_angle_range_deg"):
        if options.get(key) is not None:
            options[key] = tuple(float(x) for x in options[key])
    check_object_scale(options.get("object_scale"))
    return options


def scene_options_json(options: dict[str, Any] | None) -> dict[str, Any]:
    """Checked scene options as the dataset card stores them (ranges as lists, keys sorted)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(check_scene_options(options).items())}


def _remove_previous(out: Path) -> None:
    card = _read_card(out)
    (out / CARD).unlink()
    for name in card.get("splits", {}):
        (out / f"{name}.jsonl").unlink(missing_ok=True)
    if (out / "images").is_dir():
        shutil.rmtree(out / "images")


def _read_card(root: Path) -> dict[str, Any]:
    path = root / CARD
    if not path.is_file():
        raise DataError(f"{path}: not found; {root} is not a synthetic dataset (make one with `python -m thermgen.data --source synthetic --n N --out {root}`)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise DataError(f"{path}: field 'format' must be {FORMAT!r}, got {card.get('format') if isinstance(card, dict) else card!r}")
    if card.get("version") != FORMAT_VERSION:
        raise DataError(f"{path}: field 'version' is {card.get('version')!r}; this reader knows version {FORMAT_VERSION}")
    if card.get("complete") is not True:
        raise DataError(f"{path}: field 'complete' is not true; the generation run was interrupted, rerun it")
    if not isinstance(card.get("splits"), dict):
        raise DataError(f"{path}: field 'splits' must map split names to image counts")
    return card


def load(root: Path, split: str | None, report: SkipReport, skip_invalid: bool = False) -> list[ThermalSample]:
    """Read a synthetic dataset written by :func:`generate`.

    split: one split name, or None for all. Bad records raise :class:`DataError` naming file, line
    and field, or, with ``skip_invalid``, are counted in ``report`` and left out.
    Ground truth lands in ``Box.attrs`` (everything of an object except label and box) and in
    ``sample.meta``; ``sample.radiometric`` holds the calibration.
    """
    root = as_path(root)
    card = _read_card(root)
    names = list(card["splits"])
    if split is not None and split not in names:
        raise DataError(f"{root / CARD}: no split {split!r}; this dataset has {names}")
    samples: list[ThermalSample] = []
    for name in [split] if split is not None else names:
        path = root / f"{name}.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: ground-truth file of split {name!r} is missing")
        with open(path, encoding="utf-8") as f:
            for lineno, text in enumerate(f, 1):
                if not text.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    samples.append(_sample(json.loads(text), root, name, where))
                except json.JSONDecodeError as e:
                    _fail(report, skip_invalid, "invalid JSON", where, f"{where}: not valid JSON ({e.msg})")
                except DataError as e:
                    reason, msg = e.args if len(e.args) == 2 else ("invalid record", str(e))
                    _fail(report, skip_invalid, reason, where, msg)
    return samples


def _fail(report: SkipReport, skip: bool, reason: str, where: str, message: str) -> None:
    if not skip:
        raise DataError(message)
    report.add(reason, where)


def _sample(rec: Any, root: Path, split: str, where: str) -> ThermalSample:
    if not isinstance(rec, dict):
        raise DataError("invalid record", f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key, kind in (("image_id", str), ("image", str), ("width", int), ("height", int), ("objects", list), ("meta", dict)):
        if not isinstance(rec.get(key), kind):
            raise DataError("invalid record", f"{where}: field {key!r} must be {kind.__name__}, got {rec.get(key)!r}")
    if rec.get("split", split) != split:
        raise DataError("invalid record", f"{where}: field 'split' is {rec['split']!r} in the file of split {split!r}")
    width, height = rec["width"], rec["height"]
    image = Path(rec["image"])
    image = image if image.is_absolute() else root / image
    if not image.is_file():
        raise DataError("missing image", f"{where}: image {image} (field 'image') not found")
    boxes = []
    for k, obj in enumerate(rec["objects"]):
        field = f"objects[{k}]"
        if not isinstance(obj, dict):
            raise DataError("invalid record", f"{where}: {field} must be an object")
        label = obj.get("label")
        if label not in LABELS:
            raise DataError("unknown label", f"{where}: {field}.label {label!r} is not one of {list(LABELS)}")
        box = obj.get("box")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise DataError("invalid box", f"{where}: {field}.box must be [x, y, w, h] numbers, got {box!r}")
        x, y, w, h = (float(v) for v in box)
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width + 1e-6 or y + h > height + 1e-6:
            raise DataError("box outside image", f"{where}: {field}.box {box} is empty or outside the {width}x{height} image")
        attrs = {k2: v for k2, v in obj.items() if k2 not in ("label", "box")}
        boxes.append(Box(label, (x, y, w, h), attrs))
    meta = dict(rec["meta"])
    meta.setdefault("frame", rec["image_id"])
    radiometric = rec.get("radiometric")
    if not (isinstance(radiometric, dict) and {"kelvin_per_count", "kelvin_offset"} <= set(radiometric)):
        raise DataError("invalid record", f"{where}: field 'radiometric' must hold kelvin_per_count and kelvin_offset, got {radiometric!r}")
    if "netd_k" in rec:
        meta.setdefault("netd_k", rec["netd_k"])
    return ThermalSample(
        image_path=image,
        width=width,
        height=height,
        boxes=boxes,
        meta=meta,
        split=split,
        source="synthetic",
        image_id=rec["image_id"],
        captions=None,
        radiometric={k: float(v) for k, v in radiometric.items()},
    )
