"""A model's fixed prompt grid: day/night x few/many cars x low/high altitude, several seeds per prompt (optionally
beside the real frame whose IR-Cap captions are each row's prompt).

    python -m thermgen.bench.grid --manifest RUN/manifest.jsonl --out grid.png [--pipeline DIR] [--split test]
        [--seeds 0 1 2 3] [--steps 20] [--guidance G] [--real-column]

The prompts are real captions, not hand-written text: for each of the 8 cells the first record of the split (by
id) whose metadata and boxes give that day/night value, car band (1-5 or 6+, the attribute judge's bands) and
altitude band (low < 85 m, high >= 115 m) supplies its global and fine caption. So the grid shows what the model
does with the phrasing it was trained on; with ``--real-column`` the real frame in the first column shows what the
caption describes (off by default: a grid with dataset frames in it falls under the dataset's licence, and
thermgen's own docs never hold HIT-UAV pixels). A cell no record fills is listed and left out. Writes the PNG and ``<out>.json`` (cells, record ids,
prompts, seeds). Without ``--pipeline`` the shipped model (``thermgen.pretrained_path("hituav-64")``) is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import torch

CELLS = [(tod, cars, alt) for tod in ("day", "night") for cars in ("1-5", "6+") for alt in ("low", "high")]
CAR_WORDS = {"1-5": "1-5 cars", "6+": "6+ cars"}


def pick_records(records: list[dict], split: str) -> list[tuple[tuple[str, str, str], dict | None]]:
    """For each cell of :data:`CELLS`, the first record of ``split`` (sorted by id) with those attributes, or None."""
    from thermgen.metrics.attributes import record_attributes

    recs = sorted((r for r in records if r.get("split") == split), key=lambda r: r["id"])
    attrs = [record_attributes(r) for r in recs]
    out = []
    for cell in CELLS:
        hit = next((r for r, a in zip(recs, attrs)
                    if (a.get("time_of_day"), a.get("cars"), a.get("altitude")) == cell), None)
        out.append((cell, hit))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thermgen.bench.grid", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True, help="captioned manifest (thermgen.caption) with the split")
    p.add_argument("--out", type=Path, required=True, help="grid PNG to write (and <out>.json)")
    p.add_argument("--pipeline", type=Path, default=None, help="pipeline folder (default: the shipped hituav-64)")
    p.add_argument("--split", default="test")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    p.add_argument("--contrast-scale", type=float, default=None,
                   help="contrastive guidance along the time of day: each row's contrast prompt is its record's "
                        "captions with the time of day edited (thermgen.ircap.swap.contrast_captions), at this weight "
                        "(default: none)")
    p.add_argument("--real-column", action="store_true", help="first column: the real frame (at the generator's "
                   "size) whose captions are the row's prompt; the PNG then holds dataset pixels")
    args = p.parse_args(argv)
    if args.contrast_scale is not None and not 0 < args.contrast_scale < float("inf"):
        p.error(f"--contrast-scale must be a finite number > 0, got {args.contrast_scale}")

    import tclip.text_encoder  # noqa: F401  (diffusers resolves the text component's class by module name)
    from pipelines import ThermalDiffusionPipeline
    from thermgen.generate import save_grid
    from thermgen.ircap.manifest import read_manifest, resolve_image
    from thermgen.train.vae import load_images

    try:
        records = read_manifest(args.manifest)
        pipeline = args.pipeline
        if pipeline is None:
            from thermgen.pretrained import pretrained_path

            pipeline = pretrained_path("hituav-64")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    picked = pick_records(records, args.split)
    missing = [c for c, r in picked if r is None]
    if len(missing) == len(picked):
        print(f"error: no {args.split} record of {args.manifest} fills any cell (day/night x cars x altitude)",
              file=sys.stderr)
        return 2
    pipe = ThermalDiffusionPipeline.from_pretrained(pipeline)
    pipe.set_progress_bar_config(disable=True)
    size = int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
    kw = {} if args.guidance is None else {"guidance_scale": args.guidance}
    rows, labels, cells = [], [], []
    for (tod, cars, alt), rec in picked:
        if rec is None:
            continue
        gens = [torch.Generator().manual_seed(s) for s in args.seeds]
        contrast = None
        if args.contrast_scale is not None:
            from thermgen.ircap.swap import contrast_captions

            try:
                contrast = contrast_captions(rec, "time_of_day")
            except (ValueError, KeyError) as err:
                print(f"error: {args.manifest}: record {rec['id']}: cannot render its captions with the time of day "
                      f"edited: {err!r}", file=sys.stderr)
                return 2
            if contrast is None:
                print(f"error: {rec['id']}: no clean day/night contrast (no day/night fact, or its edited captions state "
                      "another difference too: thermgen.ircap.swap.other_differences)", file=sys.stderr)
                return 2
            n = len(args.seeds)
            kw.update(contrast_prompt=[contrast[0]] * n, contrast_prompt_fine=[contrast[1]] * n,
                      contrast_scale=args.contrast_scale)
        out = pipe(prompt=[rec["global_caption"]] * len(args.seeds), prompt_fine=[rec["fine_caption"]] * len(args.seeds),
                   num_inference_steps=args.steps, generator=gens, height=size, width=size, output_type="np", **kw)
        real = []
        if args.real_column:  # as the UNet saw it in training
            real = [load_images([resolve_image(rec, args.manifest)], size, center_crop=False)[0, 0].numpy()]
        rows.append(real + list(out.images[..., 0]))
        labels.append(f"{tod}, {CAR_WORDS[cars]}, {alt} altitude")
        cells.append({"time_of_day": tod, "cars": cars, "altitude": alt, "record": rec["id"],
                      "prompt": rec["global_caption"], "prompt_fine": rec["fine_caption"]}
                     | ({} if contrast is None else {"contrast_prompt": contrast[0], "contrast_prompt_fine": contrast[1]}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(args.out, rows, labels, args.seeds,
              col_labels=(["real frame"] if args.real_column else []) + [f"seed {s}" for s in args.seeds])
    side = args.out.with_suffix(".json")
    side.write_text(json.dumps({"pipeline": str(pipeline), "manifest": str(args.manifest), "split": args.split,
                                "seeds": args.seeds, "steps": args.steps, "guidance": args.guidance,
                                "contrast_scale": args.contrast_scale,
                                "real_column": args.real_column,
                                "cells": cells, "missing_cells": [list(c) for c in missing]}, indent=1))
    for c in missing:
        print(f"note: no {args.split} record is {c[0]} with {CAR_WORDS[c[1]]} at {c[2]} altitude; row left out")
    print(f"wrote {args.out} ({len(rows)} prompts x {len(args.seeds)} seeds) and {side}")
    for c in cells:
        print(f"  {c['record']}: " + textwrap.shorten(c["prompt"], 110))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
