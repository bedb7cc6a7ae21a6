"""Does generation follow the prompt, and since when? Checkpoint curves and sampler settings, on a held-out split.

For a recipe run folder (``python -m thermgen.train``), every UNet checkpoint (EMA weights when the run kept an
EMA, else the raw weights) is turned into a pipeline and judged on the validation split:

* FID/KID at the generator's resolution against the split's real images (one image per caption);
* accuracy of the attribute judge (``RUN/judge``, :mod:`thermgen.metrics.attributes`) against the attributes
  of the real image whose captions were the prompt, beside the majority-class rate;
* the day/night swap test (:mod:`thermgen.ircap.swap`): same seeds, prompts differing in the time of day only;
  ``--also-swap person cars`` adds the people and car-count swaps (captions edited in their IR-Cap facts).

``--prompt-style keywords|request|question`` prompts with held-out queries in a user's own words
(:mod:`thermgen.ircap.queries`: the same facts of each record, phrased as IR-Cap never does) instead of its IR-Cap
captions; the swap test then edits the time of day in those queries (the same phrasing draws on both sides).

``--contrast time_of_day`` adds contrastive guidance: each prompt's contrast is its record's captions with the time
of day edited (as the negative prompt, or with ``--contrast-scale S`` as a third guidance branch, the pipeline's
``contrast_prompt``); the swap test then contrasts each side with the other. The swap test also reports whether the
facts it leaves alone survive on the edited side.

``--guidance``, ``--steps`` and ``--contrast-scale`` take several values to choose sampler settings on val (never on
test), ``--seed`` several seeds (mean +- std per setting), and ``--raw`` also judges the raw (non-EMA) weights of the
last checkpoint. Writes ``OUT/control.json``, ``OUT/control.md``, ``OUT/control.png`` (FID and attribute accuracy
against training steps) and ``OUT/swap_pairs_<row>.png`` (the first swap pairs of each row, side by side)::

    python -m thermgen.bench.control --run runs/hituav-64 --out runs/hituav-64/control --guidance 2 3 5

Uses both cores for minutes per checkpoint (Inception features on CPU); set ``OMP_NUM_THREADS`` on a shared
machine and say so.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def checkpoint_unet(run: Path, ckpt: Path | None, *, ema: bool = True):
    """The UNet of ``run`` with a checkpoint's weights (EMA shadow when ``ema`` and present; None: the final UNet)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    unet = UNet2DConditionModel.from_pretrained(run / "unet" / "unet")
    if ckpt is None:
        return unet
    params = [p for p in unet.parameters()]
    if ema and (ckpt / "ema.safetensors").is_file():
        t = load_file(str(ckpt / "ema.safetensors"))
        if len(t) != len(params):
            raise ValueError(f"{ckpt}/ema.safetensors holds {len(t)} tensors; the UNet has {len(params)} parameters")
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(t[f"shadow.{i}"])
        return unet
    weights = ckpt / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{ckpt}: no model.safetensors (accelerate state) to read raw weights from")
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in load_file(str(weights)).items()}
    unet.load_state_dict(state)
    return unet


def query_prompts(recs: list[dict[str, Any]], style: str, seed: int) -> list[dict[str, str]]:
    """Records' prompts as held-out queries of ``style``: {"global_caption": q, "fine_caption": q} per record."""
    from thermgen.ircap.queries import build_queries

    return [{"global_caption": q, "fine_caption": q} for q in build_queries(recs, seed=seed, styles=[style])[style]]


def query_swaps(recs: list[dict[str, Any]], style: str, max_pairs: int, seed: int) -> list[tuple[str, str, str, str]]:
    """Day/night swap pairs as queries: (query_a, query_b, value_a, value_b), the time of day edited in the facts and
    both sides drawn from the same random state, so that nothing else in their wording differs."""
    import random

    from thermgen.ircap.queries import query_facts, render_query

    out = []
    for r in recs:
        facts = query_facts(r)
        if facts.get("time") not in ("day", "night"):
            continue
        other = dict(facts, time="night" if facts["time"] == "day" else "day")
        key = f"{seed}:{style}:swap:{r['id']}"
        out.append((render_query(facts, style, random.Random(key)), render_query(other, style, random.Random(key)),
                    facts["time"], other["time"]))
    if len(out) > max_pairs:
        step = len(out) / max_pairs
        out = [out[int(i * step)] for i in range(max_pairs)]
    return out


def evaluate_pipeline(run: Path, pipe, *, mode: str, split: str, guidance: float, steps: int, n_prompts: int | None,
                      swap_pairs: int, seed: int, work: Path, progress: bool, prompt_style: str = "captions",
                      contrast: str | None = None, contrast_scale: float | None = None,
                      pairs_png: Path | None = None, also_swap: tuple[str, ...] = (),
                      guidance_interval: tuple[float, float] | None = None) -> dict[str, Any]:
    """FID/KID, judge accuracies and the day/night swap of ``pipe`` on ``split`` (records spread evenly), prompted
    with the records' IR-Cap captions or (``prompt_style``) with held-out queries stating the same facts.

    ``contrast``: an IR-Cap fact (``time_of_day``). Each prompt's *contrast* is then its record's captions with that
    fact edited (:func:`thermgen.ircap.swap.contrast_captions`; where a record does not qualify or its edit would change
    another stated fact too, plain guidance),
    and each swap side's contrast is the other side's prompt. With ``contrast_scale`` None the contrast replaces the
    empty negative prompt; with a scale it is the pipeline's third, contrastive guidance branch
    (``contrast_prompt``), the empty prompt staying the negative. ``pairs_png``: also save the first swap pairs as a
    picture (:func:`save_swap_pairs`; another kind's beside it, ``<stem>_<kind>.png``).

    ``also_swap``: one-fact swap kinds run beside the day/night one (``person``: the record's people removed;
    ``cars``: six or more cars cut to two; :data:`thermgen.ircap.swap.SWAP_KINDS`), captions only, reported as
    ``swap_<kind>``; under ``contrast`` each side's contrast is again the other side's prompt.

    ``guidance_interval``: (low, high], guidance only at the sampler steps whose noise level lies in it (the
    pipeline's ``guidance_interval``; ``eval.guidance_interval``)."""
    from thermgen.ircap.swap import swap_pairs as build_swaps
    from thermgen.metrics import evaluate_generation
    from thermgen.metrics.attributes import (AttributeJudge, attribute_table, image_features, judge_images,
                                             record_attributes, stated_auc, swap_kept, swap_report)
    from thermgen.metrics.fid import list_images
    from thermgen.train.recipe import (Context, _prompts_for_mode, _records, _subset, contrast_prompts, feature_cache,
                                       generate_prompts)
    from thermgen.train.config import load_config

    cfg = load_config(run / "config.yaml", [f"train.guidance_scale={guidance}", f"eval.num_inference_steps={steps}"]
                      + ([f"eval.guidance_interval=[{guidance_interval[0]}, {guidance_interval[1]}]"]
                         if guidance_interval is not None else []))
    ctx = Context(cfg=cfg, run=run, progress=progress)
    recs = _subset(_records(ctx, split), n_prompts)
    prompts, fine = _prompts_for_mode(mode, recs if prompt_style == "captions" else query_prompts(recs, prompt_style, seed))
    if also_swap and prompt_style != "captions":
        raise ValueError(f"also_swap={list(also_swap)!r} edits IR-Cap facts: use it with prompt_style='captions'")
    neg: dict[str, Any] = {}
    if contrast is not None:
        if contrast_scale is None and guidance <= 1:
            raise ValueError(f"contrast={contrast!r} as the negative prompt needs guidance > 1 (got {guidance}): without "
                             "guidance there is no negative branch; use a contrast scale instead")
        if prompt_style != "captions":
            raise ValueError(f"contrast={contrast!r} is built from IR-Cap facts: use it with prompt_style='captions'")
        # A record without the fact keeps plain guidance: the empty negative prompt, or (as a contrast branch) its
        # own captions, whose contrast term c - k is then zero.
        n, f = contrast_prompts(mode, recs, contrast, fallback="empty" if contrast_scale is None else "own")
        neg = _contrast_kwargs(n, f, contrast_scale)
    imgs = generate_prompts(ctx, pipe, prompts, fine, work / "images", seed=seed, record_ids=[r["id"] for r in recs],
                            **neg)
    rep = evaluate_generation(ctx.manifest, imgs, None, work, split=split, name="generation", samples=0,
                              progress=progress, cache_dir=feature_cache(ctx))
    judge = AttributeJudge.load(run / "judge")
    res = cfg["train"]["resolution"]
    feats = image_features(list_images(imgs).files, res, progress=False)
    table = attribute_table(recs)
    graded = judge_images(judge, feats, table)
    by_id = {r["id"]: record_attributes(r) for r in recs}
    swaps: dict[str, dict[str, Any]] = {}
    real = None  # (record id -> row, judge features) of the split's real frames, read once when needed
    for kind in dict.fromkeys(("time_of_day", *also_swap)):
        pair_ids = None
        if prompt_style == "captions":
            built = build_swaps(recs, kind, max_pairs=swap_pairs)
            pairs = [(x.global_a, x.fine_a, x.global_b, x.fine_b, x.value_a, x.value_b, x.real_value) for x in built]
            pair_ids = [x.record_id for x in built]
        else:  # side A states the record's own time of day
            pairs = [(qa, qa, qb, qb, va, vb, va) for qa, qb, va, vb in query_swaps(recs, prompt_style, swap_pairs, seed)]
        if not pairs or kind not in judge.heads:  # no record qualifies (none with six cars), or the judge has no
            # head for the fact (one class only in its training split): nothing to generate or judge
            swaps[f"swap_{kind}"] = {"attribute": kind, "pairs": len(pairs) if kind in judge.heads else 0,
                                     "no_judge_head": kind not in judge.heads, **dict.fromkeys(
                ("follows", "moved", "verdict_changed", "a_correct", "b_correct"), float("nan"))}
            continue
        sides, side_dirs = [], []
        for k, side in ((0, "a"), (2, "b")):
            p, f = _prompts_for_mode(mode, [{"global_caption": x[k], "fine_caption": x[k + 1]} for x in pairs])
            neg = {}
            if contrast is not None:  # the other side's prompt
                n, nf = _prompts_for_mode(mode, [{"global_caption": x[2 - k], "fine_caption": x[3 - k]} for x in pairs])
                neg = _contrast_kwargs(n, nf, contrast_scale)
            sub = f"swap_{side}" if kind == "time_of_day" else f"swap_{kind}_{side}"
            d = generate_prompts(ctx, pipe, p, f, work / sub, seed=seed, **neg)
            side_dirs.append(list_images(d).files)
            sides.append(image_features(side_dirs[-1], res, progress=False))
        if pairs_png is not None:
            png = pairs_png if kind == "time_of_day" else pairs_png.with_name(f"{pairs_png.stem}_{kind}.png")
            save_swap_pairs(png, side_dirs[0], side_dirs[1], [x[4] for x in pairs], [x[5] for x in pairs],
                            [x[6] for x in pairs], attribute=kind)
        swap = swap_report(judge, kind, sides[0], sides[1], [x[4] for x in pairs], [x[5] for x in pairs],
                           real_values=[x[6] for x in pairs])
        if pair_ids is not None and kind in also_swap:  # the judge on the records' real frames: the factual ceiling
            if real is None:
                from thermgen.metrics.judging import split_features

                real_recs, real_feats = split_features(ctx.manifest, split, int(judge.info["resolution"]), progress=False,
                                                       cache_dir=feature_cache(ctx))
                real = ({r["id"]: i for i, r in enumerate(real_recs)}, real_feats)
            verdicts = judge.predict(real[1][[real[0][i] for i in pair_ids]])[kind]
            truth = [by_id[i].get(kind) for i in pair_ids]  # the judge's own labels (record_attributes)
            hits = [v == t for v, t in zip(verdicts, truth) if t is not None]
            swap["real_correct"] = float(np.mean(hits)) if hits else float("nan")
        if pair_ids is not None:  # the other facts, stated alike on both sides: kept on the edited side too?
            attrs = [by_id[i] for i in pair_ids]
            swap["kept"] = swap_kept(judge, kind, sides[0], sides[1],
                                     {a: [x.get(a) for x in attrs] for a in judge.attributes},
                                     [x[6] == x[4] for x in pairs])
        swaps[f"swap_{kind}"] = swap
    return {"fid": rep["fid"], "kid_mean": rep["kid_mean"], "n": len(recs),
            "attributes": {a: {k: r[k] for k in ("accuracy", "majority_rate", "balanced_accuracy")}
                           for a, r in graded.items()},
            "day_night_auc": stated_auc(judge, feats, table["time_of_day"], "time_of_day", "night")} | swaps


def save_swap_pairs(path: Path, files_a: list[Path], files_b: list[Path], values_a: list[str], values_b: list[str],
                    real_values: list[str | None], per_kind: int = 4, attribute: str = "time_of_day") -> Path:
    """A PNG of swap pairs, one row per pair (its two prompts' images, same seed): the first ``per_kind`` pairs of
    each real value of ``attribute`` (for the time of day both values, so that each value is shown on a factual and
    on an edited side; the people and car swaps start from the record as annotated, one real value)."""
    from PIL import Image

    from thermgen.generate import save_grid

    picked: list[int] = []
    for v in dict.fromkeys(r for r in real_values if r is not None):
        picked += [i for i, r in enumerate(real_values) if r == v][:per_kind]
    if not picked:
        return path  # no pair to show (e.g. a subset without a clean day/night pair)

    def load(p: Path) -> np.ndarray:
        im = Image.open(p)
        a = np.asarray(im).astype(np.float64)
        return a / 65535.0 if im.mode.startswith("I") else a / 255.0

    rows = [[load(files_a[i]), load(files_b[i])] for i in picked]
    what = {"time_of_day": "photographed at {}", "person": "people {} in the photo",
            "cars": "{} cars in the photo"}.get(attribute, attribute + " {} in the photo")
    labels = [f"pair {i}: " + what.format(real_values[i]) for i in picked]
    name = {"person": "people"}.get(attribute, attribute.replace("_", " "))
    return save_grid(path, rows, labels, [], col_labels=[f"prompt: {name} {values_a[0]}", f"prompt: {name} {values_b[0]}"]
                     if attribute != "time_of_day" else [f"prompt: {values_a[0]}", f"prompt: {values_b[0]}"])


def _contrast_kwargs(prompts: list[str], fine: list[str] | None, scale: float | None) -> dict[str, Any]:
    """generate_prompts' keywords for contrast prompts: as the negative prompt (``scale`` None), or as the
    contrastive guidance branch with ``scale``."""
    if scale is None:
        return {"negative": prompts, "negative_fine": fine}
    return {"contrast": prompts, "contrast_fine": fine, "contrast_scale": float(scale)}


def real_ceiling(run: Path, split: str, n_prompts: int | None, progress: bool) -> dict[str, Any]:
    """The judge on the real images of the same records: the ceiling of every column."""
    from thermgen.metrics.attributes import AttributeJudge, attribute_table, judge_images, stated_auc
    from thermgen.metrics.judging import split_features
    from thermgen.train.config import load_config
    from thermgen.train.recipe import Context, _records, _subset, feature_cache

    ctx = Context(cfg=load_config(run / "config.yaml"), run=run, progress=progress)
    judge = AttributeJudge.load(run / "judge")
    recs_all, feats_all = split_features(ctx.manifest, split, int(judge.info["resolution"]), progress=progress,
                                         cache_dir=feature_cache(ctx))
    recs = _subset(_records(ctx, split), n_prompts)
    index = {r["id"]: i for i, r in enumerate(recs_all)}
    feats = feats_all[[index[r["id"]] for r in recs]]
    table = attribute_table(recs)
    return {"n": len(recs), "attributes": {a: {"accuracy": r["accuracy"]} for a, r in judge_images(judge, feats, table).items()},
            "day_night_auc": stated_auc(judge, feats, table["time_of_day"], "time_of_day", "night")}


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_ema = any(r.get("weights") == "ema" for r in rows)
    keep = ("ema", "final") if has_ema else ("raw", "final")
    rows = [r for r in rows if r.get("weights") in keep]
    if not rows:
        return
    # x: the first setting that varies (checkpoint step, else guidance, else sampler steps); the other settings are
    # held at the first row's values, so a sweep over one checkpoint plots against guidance, not as one point.
    names = {"step": "UNet optimizer step", "guidance": "guidance scale", "sampler_steps": "sampler steps"}
    varying = [k for k in names if len({r[k] for r in rows}) > 1] or ["step"]
    xkey = varying[0]
    held = {k: rows[0][k] for k in varying[1:]}
    if len({r.get("sampler") for r in rows}) > 1:  # one curve: the first row's sampler (control.md has them all)
        names["sampler"] = "sampler"
        held["sampler"] = rows[0].get("sampler")
    rows = sorted((r for r in rows if all(r[k] == v for k, v in held.items())), key=lambda r: r[xkey])
    if held:
        title += " (" + ", ".join(f"{names[k]} {v}" for k, v in held.items()) + ")"
    steps = [r[xkey] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(steps, [r["fid"] for r in rows], "o-")
    a1.set_xlabel(names[xkey])
    a1.set_ylabel("FID (val, generator resolution)")
    a1.set_title("FID")
    for a in rows[0]["attributes"]:
        line = a2.plot(steps, [r["attributes"][a]["accuracy"] for r in rows], "o-", label=a)[0]
        a2.axhline(rows[0]["attributes"][a]["majority_rate"], color=line.get_color(), ls=":", lw=0.8)
    a2.plot(steps, [r["swap_time_of_day"]["follows"] for r in rows], "k^--", label="day/night swap followed")
    a2.set_ylim(0, 1)
    a2.set_xlabel(names[xkey])
    a2.set_ylabel("accuracy (dotted: majority rate)")
    a2.set_title("attribute judge on generated images")
    a2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _seeds(args) -> list[int]:
    seed = getattr(args, "seed", 0)
    return list(seed) if isinstance(seed, (list, tuple)) else [seed]


def _seed_groups(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows of each setting run with more than one seed, one list per setting."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = tuple(str(r.get(k)) for k in ("step", "weights", "sampler", "guidance", "sampler_steps", "contrast",
                                            "contrast_scale", "prompt_style", "guidance_interval"))
        groups.setdefault(key, []).append(r)
    return [g for g in groups.values() if len({r.get("seed") for r in g}) > 1]


def _cell(values) -> str:
    """mean +- sample std of ``values``, 3 decimals."""
    from thermgen.metrics.attributes import mean_std

    m = mean_std(values)
    return f"{m['mean']:.3f} ± {m['std']:.3f}"


def _seed_summary(rows: list[dict[str, Any]], attrs: list[str]) -> list[str]:
    """Mean +- std over seeds of every setting run with more than one seed (markdown lines; none otherwise)."""
    from thermgen.metrics.attributes import mean_std

    groups = _seed_groups(rows)
    if not groups:
        return []

    def kept(g, side):
        return [_kept_means(r["swap_time_of_day"]).get(side, float("nan")) for r in g]

    out = ["", "Mean ± std over seeds (sample standard deviation):", "",
           "| step | weights | sampler | guidance | sampler steps | seeds | FID | " + " | ".join(attrs)
           + " | day/night AUC | day/night swap followed | swap: factual side | swap: edited side "
             "| other facts kept: factual side | edited side |",
           "| --- | --- | --- | --- | --- | --- | --- |" + " --- |" * len(attrs) + " --- | --- | --- | --- | --- | --- |"]
    for g in groups:
        r0 = g[0]
        m = mean_std([r["fid"] for r in g])
        out.append(f"| {r0['step']} | {r0['weights']} | {r0.get('sampler', '')} | {_guidance(r0)} | "
                   f"{r0['sampler_steps']} | {' '.join(str(r.get('seed')) for r in g)} | {m['mean']:.1f} ± {m['std']:.1f} | "
                   + " | ".join(_cell([r["attributes"][a]["accuracy"] for r in g]) for a in attrs)
                   + f" | {_cell([r.get('day_night_auc', float('nan')) for r in g])}"
                   + f" | {_cell([r['swap_time_of_day']['follows'] for r in g])}"
                   + f" | {_cell([r['swap_time_of_day'].get('factual_correct', float('nan')) for r in g])}"
                   + f" | {_cell([r['swap_time_of_day'].get('edited_correct', float('nan')) for r in g])}"
                   + f" | {_cell(kept(g, 'factual'))} | {_cell(kept(g, 'edited'))} |")
    return out


def _other_swaps(rows: list[dict[str, Any]]) -> list[str]:
    """The swaps run beside the day/night one (``--also-swap``): a row per setting and kind, then mean +- std over
    seeds where a setting ran with several (markdown lines; none without such swaps)."""
    kinds = [k for k in dict.fromkeys(k for r in rows for k in r if k.startswith("swap_") and k != "swap_time_of_day")]
    if not kinds:
        return []
    what = {"swap_person": "people present -> absent (all removed)",
            "swap_cars": "cars 6+ -> 1-5 (cut to two)"}
    out = ["", "Other one-fact swaps (`--also-swap`): same seed per pair, prompts differing in that fact only; the "
           "factual side states the scene as annotated, the edited side the edit.", "",
           "| step | weights | guidance | seed | swap | pairs | followed | factual side / edited side "
           "| the same records' real frames (factual side's ceiling) | other facts kept: factual side / edited side |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        for k in kinds:
            if k in r:
                sw = r[k]
                out.append(f"| {r['step']} | {r['weights']} | {_guidance(r, swap=True)} | {r.get('seed', '')} | "
                           f"{what.get(k, k[5:])} | {sw['pairs']} | {_num(sw['follows'])} | {_sides(sw)} | "
                           f"{_num(sw.get('real_correct'))} | {_kept(sw)} |")
    groups = _seed_groups(rows)
    if groups:
        out += ["", "| step | weights | guidance | seeds | swap | followed | factual side | edited side |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for g in groups:
            for k in kinds:
                if all(k in r for r in g):
                    out.append(f"| {g[0]['step']} | {g[0]['weights']} | {_guidance(g[0], swap=True)} | "
                               f"{' '.join(str(r.get('seed')) for r in g)} | {what.get(k, k[5:])} | "
                               f"{_cell([r[k]['follows'] for r in g])} | "
                               f"{_cell([r[k].get('factual_correct', float('nan')) for r in g])} | "
                               f"{_cell([r[k].get('edited_correct', float('nan')) for r in g])} |")
    return out


def _kept_means(swap: dict[str, Any]) -> dict[str, float]:
    """Mean accuracy of the other attributes on the swap's factual and edited side ({} without them)."""
    kept = swap.get("kept") or {}
    return {side: float(np.mean([v[side] for v in kept.values()])) for side in ("factual", "edited")} if kept else {}


def _kept(swap: dict[str, Any]) -> str:
    m = _kept_means(swap)
    return f"{m['factual']:.3f} / {m['edited']:.3f}" if m else ""


def _sides(swap: dict[str, Any]) -> str:
    f, e = swap.get("factual_correct"), swap.get("edited_correct")
    return "" if f is None or e is None or f != f or e != e else f"{f:.3f} / {e:.3f}"


def markdown(rows: list[dict[str, Any]], args, ceiling: dict[str, Any] | None = None) -> str:
    attrs = list(rows[0]["attributes"]) if rows else []
    lines = [f"# Prompt control on `{args.split}` ({rows[0]['n'] if rows else 0} captions)", "",
             f"Run `{args.run}`; seed {' '.join(map(str, _seeds(args)))}; judge `RUN/judge`. Command: `python -m thermgen.bench.control "
             f"--run {args.run} --out {args.out} --split {args.split} --checkpoints {args.checkpoints} "
             + (f"--pipeline {args.pipeline} " if getattr(args, "pipeline", None) else "")
             + f"--guidance {' '.join(map(str, args.guidance))} --steps {' '.join(map(str, args.steps))}"
             + (f" --prompts {args.prompts}" if args.prompts else "") + f" --swap-pairs {args.swap_pairs}"
             + (f" --scheduler {' '.join(args.scheduler)}" if getattr(args, "scheduler", None) else "")
             + (" --raw" if args.raw else "") + (f" --prompt-style {args.prompt_style}" if args.prompt_style != "captions" else "")
             + (f" --contrast {args.contrast}" if getattr(args, "contrast", None) else "")
             + (f" --also-swap {' '.join(args.also_swap)}" if getattr(args, "also_swap", None) else "")
             + (f" --seed {' '.join(map(str, _seeds(args)))}" if _seeds(args) != [0] else "")
             + (f" --contrast-scale {' '.join(map(str, args.contrast_scale))}"
                if getattr(args, "contrast_scale", None) else "")
             + (f" --guidance-interval {' '.join(args.guidance_interval)}"
                if getattr(args, "guidance_interval", None) else "")
             + "`. FID on few images is biased upwards: compare rows.", "",
             "| step | weights | sampler | guidance | sampler steps | seed | FID | " + " | ".join(attrs)
             + " | day/night AUC | day/night swap followed | swap: factual side / edited side "
               "| swap, other facts kept: factual side / edited side |",
             "| --- | --- | --- | --- | --- | --- | --- |" + " --- |" * len(attrs) + " --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['weights']} | {r.get('sampler', '')} | {_guidance(r)} | {r['sampler_steps']} | "
                     f"{r.get('seed', '')} | "
                     f"{r['fid']:.1f} | "
                     + " | ".join(f"{r['attributes'][a]['accuracy']:.3f}" for a in attrs)
                     + f" | {_num(r.get('day_night_auc'))} | {r['swap_time_of_day']['follows']:.3f} | "
                       f"{_sides(r['swap_time_of_day'])} | {_kept(r['swap_time_of_day'])} |")
    if ceiling is not None:
        lines.append("| real images of these records (ceiling) | | | | | | | "
                     + " | ".join(_num(ceiling["attributes"].get(a, {}).get("accuracy")) for a in attrs)
                     + f" | {_num(ceiling['day_night_auc'])} | | | |")
    if rows:
        lines.append("| majority rate | | | | | | | " + " | ".join(f"{rows[0]['attributes'][a]['majority_rate']:.3f}"
                                                       for a in attrs) + " | 0.5 | | | |")
    lines += _seed_summary(rows, attrs)
    lines += _other_swaps(rows)
    lines += ["", "day/night AUC: how far apart the judge puts the images prompted at night and those prompted by day (the "
              "AUC of its P(night) between the two; 0.5: the prompt makes no difference it can see; on the ceiling row, "
              "the real night and day images). Unlike accuracy it does not depend on the head's threshold, so it still "
              "reads a weak judge. Swap, other facts kept: the judge's mean accuracy on the attributes the swap "
              "leaves alone (stated alike on both sides), on the side whose prompt keeps the record's time of day and "
              "on the side that states the edit; a model that follows the swap by painting another kind of scene "
              "loses them on the edited side."]
    return "\n".join(lines) + "\n"


def _guidance(r: dict[str, Any], swap: bool = False) -> str:
    """The guidance cell: the scale, and how the contrast prompt (if any) entered; for a swap row (``swap``) each
    side's contrast prompt is the other side's."""
    gi = r.get("guidance_interval")
    at = f" in sigma ({gi[0]:g}, {gi[1]:g}]" if gi else ""
    if not r.get("contrast"):
        return f"{r['guidance']}{at}"
    what = "the other side" if swap else f"{r['contrast']} edited"
    if r.get("contrast_scale") is None:
        return f"{r['guidance']}, negative: {what}{at}"
    return f"{r['guidance']} + contrast {r['contrast_scale']} ({what}){at}"


def _num(x: float | None) -> str:
    return "" if x is None or x != x else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thermgen.bench.control", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="recipe run folder (with unet/, judge/, manifest.jsonl)")
    p.add_argument("--pipeline", type=Path, default=None,
                   help="judge this pipeline folder's own weights instead of RUN's checkpoints (e.g. the shipped "
                        "thermgen/pretrained_models/hituav-64 against a RUN holding only the manifest and the judge: "
                        "python -m thermgen.train --stop-after captions, then python -m thermgen.judge train)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--split", default="val", help="held-out split to judge on (choose settings on val, read test once)")
    p.add_argument("--checkpoints", default="all", help="'all', 'last' or comma-separated steps")
    p.add_argument("--guidance", type=float, nargs="+", default=[3.0], help="guidance scales to try")
    p.add_argument("--steps", type=int, nargs="+", default=[20], help="sampler steps to try")
    p.add_argument("--scheduler", nargs="+", default=None,
                   help="samplers to try (thermgen.schedulers short names, e.g. dpm++ ddpm euler-a; default: the "
                        "pipeline's own), each built from the pipeline's scheduler config")
    p.add_argument("--raw", action="store_true", help="also judge the raw (non-EMA) weights of the last checkpoint")
    p.add_argument("--prompts", type=int, default=None, help="captions of the split to use (default: all)")
    p.add_argument("--swap-pairs", type=int, default=64, help="swap pairs (per swap kind)")
    p.add_argument("--also-swap", nargs="+", default=[], choices=["person", "cars"],
                   help="also run these one-fact swaps beside the day/night one: person (the record's people removed), "
                        "cars (six or more cars cut to two); IR-Cap captions only; under --contrast each side's "
                        "contrast is the other side")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="generation seed(s); with several, every setting runs once per seed and control.md adds "
                        "mean +- std over them (the recipe's evaluation uses 0 42 123)")
    p.add_argument("--prompt-style", default="captions", choices=["captions", "keywords", "request", "question"],
                   help="prompt with the IR-Cap captions, or with held-out queries in a user's own words (same facts)")
    p.add_argument("--contrast", default=None, choices=["time_of_day"],
                   help="contrastive guidance along this fact: each prompt's contrast is its record's captions with "
                        "the fact edited (each swap side's: the other side), used as the negative prompt, or with "
                        "--contrast-scale as a third guidance branch (default: none)")
    p.add_argument("--contrast-scale", type=float, nargs="+", default=None,
                   help="with --contrast: keep the empty negative prompt and add the edited prompt as a third, "
                        "contrastive guidance branch with these scales (u + g (c - u) + s (c - k)); default: the "
                        "edited prompt replaces the negative prompt")
    p.add_argument("--guidance-interval", nargs="+", default=None, metavar="LOW,HIGH",
                   help="noise-level intervals to try, each LOW,HIGH or 'none': guidance only at the sampler steps whose "
                        "sigma lies in (LOW, HIGH] (Kynkaanniemi et al. 2024; the pipeline's guidance_interval)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.pipeline is not None and (args.raw or args.checkpoints != "all"):
        p.error("--pipeline judges that pipeline's own weights: it takes no --checkpoints or --raw")
    if args.also_swap and args.prompt_style != "captions":
        p.error("--also-swap edits IR-Cap facts: use it with --prompt-style captions")
    if args.contrast and args.prompt_style != "captions":
        p.error("--contrast builds its negatives from IR-Cap facts: use it with --prompt-style captions")
    intervals: list[tuple[float, float] | None] = []
    for spec in args.guidance_interval or ["none"]:
        if spec.lower() == "none":
            intervals.append(None)
            continue
        try:
            lo, hi = (float(x) for x in spec.split(","))
        except ValueError:
            p.error(f"--guidance-interval: {spec!r} is not LOW,HIGH or 'none'")
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            p.error(f"--guidance-interval: {spec!r} needs 0 <= LOW < HIGH")
        intervals.append((lo, hi))
    if args.contrast_scale is not None and not args.contrast:
        p.error("--contrast-scale needs --contrast")
    if args.contrast_scale is not None and any(not x > 0 or x == float("inf") for x in args.contrast_scale):
        p.error("--contrast-scale: scales must be finite numbers > 0")
    if args.contrast and args.contrast_scale is None and any(g <= 1 for g in args.guidance):
        p.error("--contrast without --contrast-scale uses the edited prompt as the negative prompt, which needs "
                "--guidance > 1")

    import tclip.text_encoder  # noqa: F401
    from thermgen.train.recipe import _load_pipeline
    from tclip.scaffold import checkpoint_step, list_checkpoints

    run = args.run
    if not (run / "judge" / "judge.json").is_file():
        print(f"error: {run}/judge not found: run the recipe with eval.judge=true (or `python -m thermgen.judge train`)")
        return 2
    from thermgen.schedulers import make_scheduler

    base = _load_pipeline(args.pipeline or run / "pipeline", "cpu")
    mode = base.text_encoder.config.mode
    own = base.scheduler
    try:
        samplers = {n: make_scheduler(n, own.config) for n in args.scheduler} if args.scheduler else {"own": own}
    except ValueError as err:
        print(f"error: --scheduler: {err}")
        return 2
    ckpts = [] if args.pipeline is not None else list_checkpoints(run / "unet" / "checkpoints")
    if args.checkpoints == "last":
        ckpts = ckpts[-1:]
    elif args.checkpoints != "all":
        want = {int(x) for x in args.checkpoints.split(",")}
        ckpts = [c for c in ckpts if checkpoint_step(c) in want]
    todo = [(checkpoint_step(c), c, "ema" if (c / "ema.safetensors").is_file() else "raw") for c in ckpts] \
        or [(-1, None, "final")]
    if args.raw and ckpts:
        todo.append((checkpoint_step(ckpts[-1]), ckpts[-1], "raw"))
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for step, ckpt, weights in todo:
        if args.pipeline is None:
            base.unet = checkpoint_unet(run, ckpt, ema=weights == "ema").eval()
        for (_, sched), g, s, cs, gi, seed in itertools.product(samplers.items(), args.guidance, args.steps,
                                                               args.contrast_scale or [None], intervals, args.seed):
            base.scheduler = sched
            t0 = time.time()
            r = evaluate_pipeline(run, base, mode=mode, split=args.split, guidance=g, steps=s,
                                  n_prompts=args.prompts, swap_pairs=args.swap_pairs, seed=seed,
                                  work=args.out / "work", progress=not args.quiet, prompt_style=args.prompt_style,
                                  contrast=args.contrast, contrast_scale=cs,
                                  pairs_png=args.out / f"swap_pairs_{len(rows)}.png", also_swap=tuple(args.also_swap),
                                  guidance_interval=gi)
            r.update(prompt_style=args.prompt_style, contrast=args.contrast, contrast_scale=cs, guidance_interval=gi,
                     step=step,
                     weights=weights, guidance=g, sampler_steps=s, seed=seed, seconds=round(time.time() - t0, 1),
                     sampler=type(sched).__name__)
            rows.append(r)
            print(json.dumps({k: r[k] for k in ("step", "weights", "sampler", "guidance", "contrast", "contrast_scale",
                                                "guidance_interval", "sampler_steps", "seed", "fid")}
                             | {a: round(v["accuracy"], 3) for a, v in r["attributes"].items()}
                             | {"day_night_auc": round(r["day_night_auc"], 3),
                                "swap_follows": round(r["swap_time_of_day"]["follows"], 3)}
                             | {f"{k}_follows": round(r[f"swap_{k}"]["follows"], 3) for k in args.also_swap}),
                  flush=True)
            (args.out / "control.json").write_text(json.dumps(rows, indent=1))
    ceiling = real_ceiling(run, args.split, args.prompts, progress=not args.quiet)
    (args.out / "ceiling.json").write_text(json.dumps(ceiling, indent=1))
    (args.out / "control.md").write_text(markdown(rows, args, ceiling))
    plot_curves(rows, args.out / "control.png", f"{run}: {args.split}")
    print(f"wrote {args.out}/control.json, control.md, control.png, swap_pairs_<row>.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
