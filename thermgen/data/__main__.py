"""The dataset command: summarise a thermal dataset, or generate synthetic scenes.

    python -m thermgen.data --source hit-uav --root ../shared/data/hit-uav [--split test] [--json]
    python -m thermgen.data --source synthetic --n 1000 --size 128 --out data/synth [--seed 0]

The summary gives, per split: number of images, boxes per label, images without boxes, image
sizes, skipped records with reasons (with ``--skip-invalid``; without it the first bad record
stops the command with a message naming its file and record), and metadata tallies (time of day,
weather, altitude, view angle, scene; continuous values, as in synthetic scenes, in bins of 10 m
or 10 degrees; ambient temperature as min/max/mean). ``--json`` prints it as one JSON object with stable keys;
otherwise a readable table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import SOURCES, adapter, list_splits, load_samples
from ._common import sort_splits
from .sample import DataError, SkipReport, ThermalSample

logger = logging.getLogger("thermgen.data")

# Metadata keys tallied value by value (always present in the summary, with "unknown" counts).
TALLY_KEYS = ("time_of_day", "weather", "altitude_m", "view_angle_deg")
# Tallied only when some sample has them.
OPTIONAL_TALLY_KEYS = ("scene",)


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _sort_key(k: str) -> tuple[int, float, str]:
    try:
        return (0, float(k.split("-")[0]) if "-" in k[1:] else float(k), k)
    except ValueError:
        return (1 if k != "unknown" else 2, 0.0, k)


# Numeric metadata with more distinct values than this (synthetic scenes draw them continuously)
# is tallied in bins of BIN_WIDTH (metres or degrees), keyed "lo-hi".
MAX_EXACT_VALUES = 20
BIN_WIDTH = 10.0


def _tally(values: Iterable[Any]) -> dict[str, int]:
    values = list(values)
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(set(numeric)) > MAX_EXACT_VALUES:
        def key(v: Any) -> str:
            if v is None:
                return "unknown"
            if v in numeric_set:
                lo = BIN_WIDTH * (float(v) // BIN_WIDTH)
                return f"{_fmt_value(lo)}-{_fmt_value(lo + BIN_WIDTH)}"
            return _fmt_value(v)

        numeric_set = set(numeric)
        counts = Counter(key(v) for v in values)
    else:
        counts = Counter("unknown" if v is None else _fmt_value(v) for v in values)
    return {k: counts[k] for k in sorted(counts, key=_sort_key)}


def summarize(samples: list[ThermalSample], report: SkipReport | None = None) -> dict[str, Any]:
    """Counts for one group of samples: images, boxes per label, sizes, metadata tallies, skips."""
    labels = Counter(b.label for s in samples for b in s.boxes)
    out: dict[str, Any] = {
        "images": len(samples),
        "boxes": sum(labels.values()),
        "boxes_per_label": {k: labels[k] for k in sorted(labels)},
        "images_without_boxes": sum(1 for s in samples if not s.boxes),
        "image_sizes": _tally(f"{s.width}x{s.height}" for s in samples),
        "meta": {k: _tally(s.meta.get(k) for s in samples) for k in TALLY_KEYS},
        "with_captions": sum(1 for s in samples if s.captions),
        "radiometric": sum(1 for s in samples if s.radiometric),
    }
    for k in OPTIONAL_TALLY_KEYS:
        if any(k in s.meta for s in samples):
            out["meta"][k] = _tally(s.meta.get(k) for s in samples)
    ambient = [float(s.meta["ambient_k"]) for s in samples if "ambient_k" in s.meta]
    if ambient:
        out["meta"]["ambient_k"] = {"n": len(ambient), "min": min(ambient), "max": max(ambient), "mean": sum(ambient) / len(ambient)}
    out["skipped"] = report.to_dict() if report is not None else None
    return out


def dataset_summary(source: str, root: Path, split: str | None = None, skip_invalid: bool = False) -> dict[str, Any]:
    """Summary of a dataset per split plus the total, as printed by ``--json``.

    One load gives the samples and the authoritative skip report (``total.skipped``). When records
    were skipped and the adapter can list its splits, each split that has samples is loaded again
    on its own so that its skips are reported against it; records that belong to no such split
    (e.g. an annotation whose image is in no split folder) appear only in the total, counted in
    ``skipped_without_split``. Adapters that cannot list splits (folder, synthetic) report skips in
    the total only (``skipped`` is null per split).
    """
    samples, total_report = load_samples(source, root, split=split, skip_invalid=skip_invalid)
    names = sort_splits(s.split for s in samples)
    if split is not None and split not in names:
        names.append(split)
    per_split_reports: dict[str, SkipReport | None] = {name: None for name in names}
    listed = list_splits(source, root)
    if listed is not None:
        for name in names:
            if total_report.total == 0:
                per_split_reports[name] = SkipReport()
            elif split is not None:
                per_split_reports[name] = total_report
            else:
                per_split_reports[name] = load_samples(source, root, split=name, skip_invalid=skip_invalid)[1]
    splits = {name: summarize([s for s in samples if s.split == name], per_split_reports[name]) for name in names}
    out = {
        "source": source,
        "root": str(root),
        "split": split,
        "skip_invalid": skip_invalid,
        "splits": splits,
        "total": summarize(samples, total_report),
    }
    if listed is not None:
        attributed = sum(r.total for r in per_split_reports.values() if r is not None)
        out["total"]["skipped_without_split"] = total_report.total - attributed
    return out


def format_table(summary: dict[str, Any]) -> str:
    """The readable form of :func:`dataset_summary`'s result."""
    lines = [f"source {summary['source']}  root {summary['root']}"]
    labels = list(summary["total"]["boxes_per_label"])
    header = ["split", "images", "boxes", *labels, "no boxes", "skipped"]
    rows = []
    for name, s in [*summary["splits"].items(), ("total", summary["total"])]:
        skipped = s["skipped"]["total"] if s["skipped"] is not None else "-"
        rows.append([name, s["images"], s["boxes"], *(s["boxes_per_label"].get(k, 0) for k in labels), s["images_without_boxes"], skipped])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        lines.append("  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, widths))))
    for name, s in [*summary["splits"].items(), ("total", summary["total"])]:
        lines.append(f"\n[{name}]")
        lines.append(f"  image sizes     {_inline(s['image_sizes'])}")
        for key, tally in s["meta"].items():
            if key == "ambient_k":
                lines.append(f"  {key:<15} {tally['min']:.1f}..{tally['max']:.1f} K (mean {tally['mean']:.1f}, n={tally['n']})")
            else:
                lines.append(f"  {key:<15} {_inline(tally)}")
        if s["with_captions"]:
            lines.append(f"  with captions   {s['with_captions']}")
        if s["radiometric"]:
            lines.append(f"  radiometric     {s['radiometric']}")
        if s["skipped"] and s["skipped"]["total"]:
            for reason, n in sorted(s["skipped"]["counts"].items()):
                lines.append(f"  skipped         {n} x {reason}, e.g. {s['skipped']['examples'][reason][0]}")
    return "\n".join(lines)


def _inline(tally: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in tally.items()) or "-"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m thermgen.data",
        description="Summarise a thermal dataset (images, boxes per label, skipped records, metadata tallies per split), "
        "or, with --source synthetic --out DIR, generate synthetic thermal scenes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--source", required=True, choices=SOURCES, help="dataset format / adapter")
    p.add_argument("--root", type=Path, default=None, help="dataset folder to read (for folder: a folder or a captions CSV/JSONL)")
    p.add_argument("--split", default=None, help="read only this split (default: every split)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad records (box outside image, unknown label, missing image, broken record) and count them, "
        "instead of stopping at the first with an error",
    )
    g = p.add_argument_group("synthetic generation (--source synthetic --out DIR)")
    g.add_argument("--out", type=Path, default=None, help="write a synthetic dataset to this folder, then summarise it")
    g.add_argument("--n", type=int, default=None, help="number of scenes to generate (required with --out)")
    g.add_argument("--size", type=int, default=128, help="image side in pixels")
    g.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes identical files")
    g.add_argument("--altitude", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="camera altitude range in m (your drone's flight envelope); views outside it are not drawn")
    g.add_argument("--view-angle", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="camera depression angle range in degrees below the horizon (90 = straight down)")
    g.add_argument("--object-scale", type=float, default=None, help="multiply the drawn number of objects per scene")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.out is not None:
        if args.source != "synthetic":
            parser.error("--out generates data and works only with --source synthetic")
        if args.n is None or args.n <= 0:
            parser.error("--n must be a positive number of scenes with --out")
        if args.size <= 0:
            parser.error("--size must be positive")
        if args.root is not None:
            parser.error("give either --root (read) or --out (generate), not both")
        options = {k: v for k, v in (("altitude_range_m", args.altitude), ("view_angle_range_deg", args.view_angle),
                                     ("object_scale", args.object_scale)) if v is not None}
        synthetic = adapter("synthetic")
        try:
            root = Path(synthetic.generate(out=args.out, n=args.n, size=args.size, seed=args.seed, scene_options=options) or args.out)
        except ValueError as e:
            parser.error(str(e))
    else:
        if args.root is None:
            parser.error("--root is required (or --out with --source synthetic)")
        root = args.root

    try:
        summary = dataset_summary(args.source, root, split=args.split, skip_invalid=args.skip_invalid)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
