"""IR-Cap over a dataset: read, measure, state facts, caption and write a validated manifest (contract 1).

The library half of ``python -m thermgen.caption`` (the command parses flags and calls :func:`caption_samples`);
the recipe runner and the demo call it directly.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from thermgen.data.sample import DataError, SkipReport, ThermalSample
from thermgen.ircap.backends import Backend, make_backend
from thermgen.ircap.facts import infer_facts
from thermgen.ircap.manifest import SCHEMA_VERSION, image_ref, write_manifest
from thermgen.ircap.measure import measure_image
from thermgen.ircap.render import count_tokens, render_captions, render_terse
from thermgen.ircap.report import build_report, write_report

__all__ = ["CAPTIONER_VERSION", "caption_one", "caption_samples", "read_for_measurement"]

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
                backend: Backend | None = None, variants: int = 0, terse_variants: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Caption one sample. Returns ``(manifest record, extras for the report)``.

    The record's ``image`` is written relative to ``manifest_path``'s folder. ``variants`` > 0 adds
    ``caption_variants``: the same measured facts rendered by the rules with phrasing seeds
    ``seed + 1 .. seed + variants`` (training-time text augmentation; the main captions are unchanged).
    ``terse_variants`` > 0 appends that many terse global variants (:func:`render_terse`: fragments in
    another order, part of the facts) to ``caption_variants["global"]``.
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
    if terse_variants > 0:
        cv = rec.setdefault("caption_variants", {"global": [], "fine": []})
        cv["global"] = cv["global"] + [render_terse(scene, labels, meas, seed=seed + 1 + k, key=rid) for k in range(terse_variants)]
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
    skip_invalid: bool = False,
    terse_variants: int = 0,
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
        terse_variants: extra terse global variants to store (see :func:`caption_one`).
        skip_invalid: an image that cannot be read or measured (truncated, true colour, NaN, size unlike its
            annotation) is left out and counted in the report's ``skipped`` (reason and file) instead of stopping
            the run with a :class:`DataError` naming the file. Raises :class:`DataError` when every image is skipped.

    Returns:
        The report dict (see :func:`thermgen.ircap.report.build_report`).
    """
    out_path = Path(out_path)
    if variants < 0 or terse_variants < 0:
        raise ValueError(f"variants must be >= 0, got {variants} (terse: {terse_variants})")
    be = backend if isinstance(backend, Backend) else make_backend(backend or "rules", **(backend_options or {}))
    t0 = time.perf_counter()
    # Stream records to the manifest; keep only what the report needs (a large dataset's full
    # measurements would not fit in memory).
    slim, extras, kept = [], [], []
    skipped = SkipReport.from_dict(skip_report)

    def records():
        for s in tqdm(samples, desc="captioning", unit="img", disable=not progress, file=sys.stderr):
            try:
                rec, ex = caption_one(s, out_path, seed=seed, backend=be, variants=variants, terse_variants=terse_variants)
            except DataError as e:
                if not skip_invalid:
                    raise
                skipped.add(skip_reason(e, s.image_path), str(e))
                logger.warning("skipped: %s", e)
                continue
            slim.append(_slim(rec))
            extras.append(ex)
            kept.append(s)
            yield rec
        if samples and not kept:  # raised inside the write, so an existing manifest at out_path is left as it was
            raise DataError(f"every image was skipped as invalid ({skipped.summary()}); nothing written to {out_path}")

    n = write_manifest(out_path, records())
    elapsed = time.perf_counter() - t0
    truth = {r["id"]: s for r, s in zip(slim, kept)}
    if skipped.total:
        logger.warning("%s", skipped.summary())
    report = build_report(slim, extras, samples=truth, elapsed_s=elapsed, backend=be.name,
                          skipped=skipped.to_dict() if (skip_report is not None or skipped.total) else None)
    report_path = Path(report_path) if report_path else out_path.with_name(out_path.stem + ".report.json")
    write_report(report, report_path)
    logger.info("wrote %d records to %s in %.1f s; report %s", n, out_path, elapsed, report_path)
    return report


def skip_reason(err: Exception, path: str | Path) -> str:
    """The reason of a bad-image error, without its file name and numbers: one count per kind of fault."""
    msg = str(err)
    prefix = f"{path}: "
    if msg.startswith(prefix):
        msg = msg[len(prefix):]
    msg = re.split(r" \(|; |\. ", msg, maxsplit=1)[0]
    return re.sub(r"\d+", "N", msg).strip() or type(err).__name__


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest record that :func:`thermgen.ircap.report.build_report` reads."""
    return {
        "id": rec["id"], "split": rec["split"], "global_caption": rec["global_caption"],
        "fine_caption": rec["fine_caption"], "tokens": rec["tokens"], "stated": rec["stated"],
        "objects": [{"label": o["label"]} for o in rec["objects"]],
        "meta": {"time_of_day": rec["meta"]["time_of_day"]} if "time_of_day" in rec["meta"] else {},
        "facts": [{"name": f["name"]} for f in rec["facts"]],
    }
