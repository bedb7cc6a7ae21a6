"""Caption a thermal dataset with IR-Cap and write a validated manifest (contract 1).

    python -m thermgen.caption --source hit-uav --root ../shared/data/hit-uav --split test \\
        --out runs/hituav/manifest.jsonl

For every image: read the pixels (``thermgen.io``, "fixed" normalisation), measure them
(:mod:`thermgen.ircap.measure`), derive facts (:mod:`thermgen.ircap.facts`), write the two
captions (:mod:`thermgen.ircap.render`, or an optional model backend validated against the facts,
:mod:`thermgen.ircap.backends`), then write one manifest line. A caption report (JSON + Markdown +
token-length histogram PNG) is written beside the manifest unless ``--report`` says elsewhere.

Library entry point for the recipe runner: :func:`caption_samples`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from thermgen.data import SOURCES
from thermgen.data.sample import DataError, ThermalSample
from thermgen.ircap.backends import Backend, make_backend
from thermgen.ircap.facts import infer_facts
from thermgen.ircap.manifest import SCHEMA_VERSION, image_ref, write_manifest
from thermgen.ircap.measure import measure_image
from thermgen.ircap.render import count_tokens, render_captions
from thermgen.ircap.report import build_report, write_report

CAPTIONER_VERSION = "1.0"
logger = logging.getLogger("thermgen.caption")


def read_for_measurement(sample: ThermalSample) -> tuple[np.ndarray, float | None, float | None]:
    """Read ``sample``'s pixels for measuring.

    Returns ``(image, kelvin_per_unit, kelvin_offset)``: the image as float32 (H, W) in [0, 1],
    white-hot, "fixed" normalisation; the calibration in those units (``T = offset + value * gain``)
    when the sample is radiometric, else ``(None, None)``.
    """
    from thermgen.io import full_range, normalize, read_raw

    raw = read_raw(sample.image_path)
    img = normalize(raw, "fixed", where=str(sample.image_path))
    kpu = off = None
    if sample.radiometric and raw.dtype.kind in "ui":
        # "fixed" divides counts by the dtype's full range, so one unit is full_range counts.
        kpu = float(sample.radiometric["kelvin_per_count"]) * full_range(raw.dtype)[1]
        off = float(sample.radiometric["kelvin_offset"])
    return img, kpu, off


def _object_fact_values(facts) -> dict[str, Any]:
    """``{fact name: value}`` of one object, plus ``hotspot_side`` when it has a hot spot."""
    out: dict[str, Any] = {f.name: f.value for f in facts}
    for f in facts:
        if f.name == "heat_distribution" and f.value == "hot_spot":
            out["hotspot_side"] = f.evidence["where"]
    return out


def caption_one(sample: ThermalSample, manifest_path: Path, seed: int = 0,
                backend: Backend | None = None, variants: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Caption one sample. Returns ``(manifest record, extras for the report)``.

    The record's ``image`` is written relative to ``manifest_path``'s folder. ``variants`` > 0 adds
    ``caption_variants``: the same measured facts rendered by the rules with phrasing seeds
    ``seed + 1 .. seed + variants`` (training-time text augmentation; the main captions are unchanged).
    """
    img, kpu, off = read_for_measurement(sample)
    if not np.isfinite(img).all():
        raise DataError(f"{sample.image_path}: image holds NaN or infinite values")
    if img.shape != (sample.height, sample.width):
        raise DataError(f"{sample.image_path}: image is {img.shape[1]}x{img.shape[0]} but the annotation says "
                        f"{sample.width}x{sample.height}")
    labels = [b.label for b in sample.boxes]
    meas = measure_image(img, [b.xywh for b in sample.boxes], kelvin_per_unit=kpu, kelvin_offset=off)
    scene, per_obj = infer_facts(meas, labels, sample.meta)
    rid = f"{sample.source}/{sample.split}/{sample.image_id}"
    caps = render_captions(scene, per_obj, labels, meas, seed=seed, key=rid)
    g, f, stated = caps.global_caption, caps.fine_caption, caps.stated
    captioner = {"name": "ircap-rules", "version": CAPTIONER_VERSION, "seed": int(seed)}
    fallback = None
    if backend is not None and backend.name != "rules":
        out, reason = backend.caption_checked(sample, meas, scene, per_obj, labels, (g, f))
        if out is not None:
            g, f = out
            stated = [dict(s, backend=backend.name) for s in stated]  # facts the backend was given and checked against
            captioner = {"name": f"ircap-{backend.name}", "version": CAPTIONER_VERSION, "seed": int(seed),
                         "model": backend.model_name}
        else:
            fallback = reason
            captioner = {"name": "ircap-rules", "version": CAPTIONER_VERSION, "seed": int(seed),
                         "fallback_from": backend.name, "fallback_reason": reason}
    objects = [{"label": b.label, "box": [float(v) for v in b.xywh], "facts": _object_fact_values(facts)}
               for b, facts in zip(sample.boxes, per_obj)]
    rec = {
        "schema_version": SCHEMA_VERSION,
        "id": rid,
        "image": image_ref(sample.image_path, manifest_path),
        "split": sample.split,
        "source": sample.source,
        "width": int(sample.width),
        "height": int(sample.height),
        "global_caption": g,
        "fine_caption": f,
        "objects": objects,
        "meta": dict(sample.meta),
        "measurements": meas,
        "captioner": captioner,
        "facts": [fa.to_dict() for fa in scene] + [fa.to_dict() for facts in per_obj for fa in facts],
        "stated": stated,
        "tokens": {"global": count_tokens(g), "fine": count_tokens(f)},
    }
    if variants > 0:
        alts = [render_captions(scene, per_obj, labels, meas, seed=seed + 1 + k, key=rid) for k in range(variants)]
        rec["caption_variants"] = {"global": [a.global_caption for a in alts], "fine": [a.fine_caption for a in alts]}
    if sample.captions:
        rec["source_captions"] = dict(sample.captions)  # captions shipped with the data, kept for comparison
    return rec, {"fallback": fallback, "dropped": caps.dropped}


def caption_samples(
    samples: Sequence[ThermalSample],
    out_path: str | Path,
    backend: str | Backend | None = "rules",
    seed: int = 0,
    progress: bool = True,
    report_path: str | Path | None = None,
    backend_options: dict[str, Any] | None = None,
    skip_report: dict[str, Any] | None = None,
    variants: int = 0,
) -> dict[str, Any]:
    """Caption ``samples``, write the manifest to ``out_path`` and the report beside it.

    Args:
        samples: from :func:`thermgen.data.load_samples`.
        out_path: manifest file (``.jsonl``); parent folders are created.
        backend: ``"rules"`` (default), ``"transformers"``, ``"openai"``, or a :class:`Backend`.
        seed: phrasing seed (same seed, same captions).
        progress: show a tqdm progress bar.
        report_path: report JSON path; default ``<out stem>.report.json`` beside the manifest
            (a Markdown twin and a token-length PNG are written next to it).
        backend_options: keyword arguments for :func:`thermgen.ircap.backends.make_backend`.
        skip_report: the loader's :meth:`SkipReport.to_dict`, copied into the report.
        variants: extra rule-rendered phrasings of each caption to store (see :func:`caption_one`).

    Returns:
        The report dict (see :func:`thermgen.ircap.report.build_report`).
    """
    out_path = Path(out_path)
    if variants < 0:
        raise ValueError(f"variants must be >= 0, got {variants}")
    be = backend if isinstance(backend, Backend) else make_backend(backend or "rules", **(backend_options or {}))
    t0 = time.perf_counter()
    # Stream records to the manifest; keep only what the report needs (a large dataset's full
    # measurements would not fit in memory).
    slim, extras = [], []

    def records():
        for s in tqdm(samples, desc="captioning", unit="img", disable=not progress, file=sys.stderr):
            rec, ex = caption_one(s, out_path, seed=seed, backend=be, variants=variants)
            slim.append(_slim(rec))
            extras.append(ex)
            yield rec

    n = write_manifest(out_path, records())
    elapsed = time.perf_counter() - t0
    truth = {r["id"]: s for r, s in zip(slim, samples)}
    report = build_report(slim, extras, samples=truth, elapsed_s=elapsed, backend=be.name, skipped=skip_report)
    report_path = Path(report_path) if report_path else out_path.with_name(out_path.stem + ".report.json")
    write_report(report, report_path)
    logger.info("wrote %d records to %s in %.1f s; report %s", n, out_path, elapsed, report_path)
    return report


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest record that :func:`thermgen.ircap.report.build_report` reads."""
    return {
        "id": rec["id"], "split": rec["split"], "global_caption": rec["global_caption"],
        "fine_caption": rec["fine_caption"], "tokens": rec["tokens"], "stated": rec["stated"],
        "objects": [{"label": o["label"]} for o in rec["objects"]],
        "meta": {"time_of_day": rec["meta"]["time_of_day"]} if "time_of_day" in rec["meta"] else {},
        "facts": [{"name": f["name"]} for f in rec["facts"]],
    }


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except for required flags and ``None`` defaults (their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m thermgen.caption",
        description="Caption thermal images with IR-Cap (measured heat facts -> two captions) into a validated "
                    "JSON Lines manifest, plus a caption report.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--source", required=True, choices=SOURCES, help="dataset format of --root")
    p.add_argument("--root", required=True, type=Path, help="dataset folder")
    p.add_argument("--split", default=None, help="only this split (e.g. test); default: every split")
    p.add_argument("--out", required=True, type=Path, help="manifest to write (.jsonl)")
    p.add_argument("--backend", default="rules", choices=("rules", "transformers", "openai"),
                   help="caption writer: measured-fact rules, a local transformers model, or an OpenAI-compatible "
                        "HTTP endpoint (model output is validated; failures fall back to rules and are counted)")
    p.add_argument("--model", default=None,
                   help="transformers: local model folder; openai: model name (required for those backends)")
    p.add_argument("--base-url", default=None,
                   help="openai backend: base URL of the endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="openai backend: environment variable holding the API key (may be unset for local servers)")
    p.add_argument("--seed", type=int, default=0, help="seed for the choice of phrasings")
    p.add_argument("--variants", type=int, default=0,
                   help="also store K other phrasings of each caption (same facts, phrasing seeds seed+1..seed+K) "
                        "under 'caption_variants'; tclip.train draws from them as text augmentation")
    p.add_argument("--report", type=Path, default=None,
                   help="report JSON path (a .md and a token-length .png are written beside it); "
                        "default: <out stem>.report.json beside the manifest")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip bad dataset records (counted in the report) instead of stopping at the first one")
    p.add_argument("--limit", type=int, default=None, help="caption at most this many images (for quick looks); default: all")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown by default)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.variants < 0:
        parser.error(f"--variants must be >= 0, got {args.variants}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # A log file beside the manifest keeps the run's settings and outcome with its output.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(args.out.with_name(args.out.stem + ".log"), mode="w", encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger.addHandler(log_file)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.info("thermgen.caption %s", " ".join(argv if argv is not None else sys.argv[1:]))
    from thermgen.data import load_samples

    try:
        samples, skipped = load_samples(args.source, args.root, split=args.split, skip_invalid=args.skip_invalid)
        if args.limit is not None:
            samples = samples[: args.limit]
        if not samples:
            raise DataError(f"{args.root}: no images found for source {args.source!r}"
                            + (f" split {args.split!r}" if args.split else ""))
        opts: dict[str, Any] = {}
        if args.backend != "rules":
            opts = {"model": args.model, "base_url": args.base_url, "api_key_env": args.api_key_env}
        report = caption_samples(samples, args.out, backend=args.backend, seed=args.seed,
                                 progress=not args.no_progress, report_path=args.report, backend_options=opts,
                                 skip_report=skipped.to_dict(), variants=args.variants)
    except (DataError, ValueError) as e:
        logger.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(log_file)
        logger.setLevel(old_level)
        log_file.close()
    s = report["summary"]
    be = report["backend"]
    if args.backend != "rules" and s["records"] and be["fallbacks"] == s["records"]:
        reasons = "; ".join(f"{k} ({v})" for k, v in be["fallback_reasons"].items())
        print(f"error: every caption ({s['records']}) fell back to the rules, so the {args.backend} backend produced "
              f"nothing usable: {reasons}. The manifest {args.out} holds the rule captions.", file=sys.stderr)
        return 3
    gt = report.get("ground_truth")
    if gt and gt["agreement"] is not None:
        print(f"synthetic ground truth: {gt['agree']}/{gt['claims']} state claims agree ({gt['agreement']:.1%}); "
              f"people/vehicles with a state claim: {gt['state_claim_share']:.1%}")
    print(f"{s['records']} records -> {args.out} ({report['elapsed_s']:.1f} s); "
          f"distinct global captions {s['distinct_global_share']:.1%}, fine {s['distinct_fine_share']:.1%}; "
          f"max tokens {s['max_tokens_global']}/{s['max_tokens_fine']}; skipped {skipped.total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
