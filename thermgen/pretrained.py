"""Models that ship inside the package, and the command that packages one from a recipe run.

``thermgen.pretrained_path("hituav-64")`` returns the folder of a shipped ``ThermalDiffusionPipeline``
(diffusers layout, safetensors, a model card ``README.md``), loadable offline with
``ThermalDiffusionPipeline.from_pretrained(path)``; ``python -m thermgen.generate`` uses it when no ``--pipeline``
is given. A name that is not shipped raises ``FileNotFoundError`` saying how to train and package one.

Packaging (maintainers)::

    python -m thermgen.pretrained --run runs/hituav-64 --name hituav-64 [--fp16]

copies ``RUN/pipeline`` into ``thermgen/pretrained_models/NAME/`` (weights as safetensors; ``--fp16`` stores
them in half precision, to be used only where that changes no reported number), writes the model card from the
run's reports, and refuses a folder over :data:`MAX_BYTES`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "pretrained_models"
MAX_BYTES = 50 * 1024 * 1024
KNOWN = {"hituav-64": "configs/hituav-64.yaml on HIT-UAV (python -m thermgen.train --config hituav-64 "
                      "--data-source hit-uav --data-root PATH)"}


def pretrained_path(name: str = "hituav-64") -> Path:
    """Folder of the shipped pipeline ``name``. Raises FileNotFoundError (with how to get one) if not shipped."""
    folder = MODELS_DIR / name
    if (folder / "model_index.json").is_file():
        return folder
    how = KNOWN.get(name)
    shipped = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "model_index.json").is_file()) if MODELS_DIR.is_dir() else []
    raise FileNotFoundError(
        f"no packaged model {name!r} in this installation (shipped: {shipped or 'none'}). "
        + (f"Train it with {how}, then package it with `python -m thermgen.pretrained --run RUN --name {name}`, "
           "or pass a pipeline folder (--pipeline RUN/pipeline)." if how else
           "Pass a pipeline folder written by python -m thermgen.train (RUN/pipeline).")
    )


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def package(run: Path, name: str, *, fp16: bool = False, card: str | None = None, dest: Path | None = None,
            notes: str | None = None) -> Path:
    """Copy ``run/pipeline`` into the package as ``name`` (optionally fp16), write the model card; returns the folder."""
    import torch

    from pipelines import ThermalDiffusionPipeline

    src = run / "pipeline"
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"{src}: no pipeline (run python -m thermgen.train first)")
    dest = (dest or MODELS_DIR) / name
    pipe = ThermalDiffusionPipeline.from_pretrained(src)
    if fp16:
        pipe.to(torch.float16)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    if card is None:  # the card states what fp16 storage changes, measured here
        card = model_card(run, name, fp16=fp16, fp16_diff=fp16_difference(src, tmp) if fp16 else None, notes=notes)
    (tmp / "README.md").write_text(card)
    size = folder_bytes(tmp)
    if size > MAX_BYTES:
        shutil.rmtree(tmp)
        raise ValueError(f"packaged model {name} would be {size / 2**20:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB limit")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


FP16_CHECK_PROMPTS = ("An infrared thermal image of a road at night, seen from 60 m.",
                      "An infrared thermal image of a parking lot in daytime with many cars, seen from 100 m.")


def fp16_difference(original: Path, packaged: Path, *, steps: int = 10, seeds: tuple[int, ...] = (0, 1)) -> dict:
    """How much fp16 storage changes the images: the packaged pipeline (weights stored in half precision, loaded
    in float32) against the original, same prompts, seeds and settings. ``{"max_abs", "mean_abs"}`` in [0, 1] units."""
    import numpy as np
    import torch

    from pipelines import ThermalDiffusionPipeline

    imgs = []
    for folder in (original, packaged):
        pipe = ThermalDiffusionPipeline.from_pretrained(folder).to(torch.float32)
        pipe.set_progress_bar_config(disable=True)
        prompts = [p for p in FP16_CHECK_PROMPTS for _ in seeds]
        gens = [torch.Generator().manual_seed(s) for _ in FP16_CHECK_PROMPTS for s in seeds]
        imgs.append(np.asarray(pipe(prompt=prompts, num_inference_steps=steps, generator=gens, output_type="np").images))
    d = np.abs(imgs[0] - imgs[1])
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "images": len(d), "steps": steps}


def model_card(run: Path, name: str, *, fp16: bool, fp16_diff: dict | None = None, notes: str | None = None) -> str:
    """A diffusers-style model card from the run's config and reports."""
    cfg = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
    import yaml

    terse = ((yaml.safe_load(cfg) or {}).get("captions") or {}).get("terse_variants") if cfg else None
    if terse:
        prompts_note = ("- Prompts: IR-Cap sentences (`python -m thermgen.caption` writes them) or short user phrasings "
                        "such as \"night, 60 m, five cars\"\n  (trained with captions.terse_variants); other free-form text "
                        "is understood only as far as the small text tower\n  trained from scratch on those captions allows.")
    else:
        prompts_note = ("- Prompts should follow IR-Cap's phrasing (`python -m thermgen.caption` writes it); free-form "
                        "text is understood only\n  as far as the small text tower trained from scratch on those captions "
                        "allows.")
    gen = run / "reports" / "generation.md"
    judge = run / "reports" / "judge.md"
    fp16_note = ""
    if fp16 and fp16_diff:
        fp16_note = (f"\nThe evaluation below was measured with the run's float32 weights; stored in half precision and "
                     f"loaded in float32 (the default), they change generated images by at most "
                     f"{fp16_diff['max_abs']:.4f} of the [0, 1] range (mean {fp16_diff['mean_abs']:.5f}; "
                     f"{fp16_diff['images']} images, {fp16_diff['steps']} steps).")
    return f"""---
library_name: diffusers
pipeline_tag: text-to-image
license: cc-by-4.0
tags: [thermal, infrared, lwir, text-to-image, thermgen]
datasets: [HIT-UAV]
---

# thermgen `{name}`: text-to-thermal generation at 64 px

A `ThermalDiffusionPipeline` (thermgen) that turns IR-Cap-style captions ("An infrared thermal image of ... at night,
seen from 60 m ...") into 64 x 64 white-hot thermal (LWIR) images of UAV views. Components: a UNet trained from
scratch, a lossless `PatchAutoencoder` (4 x 4 pixel patches folded into channels: no learned VAE), and a small
T-CLIP text encoder (open_clip text tower with global and fine LoRA adapters merged, fused 0.8 / 0.2) whose token
states feed cross-attention and whose pooled embedding joins the timestep embedding. Weights: safetensors{' (fp16)' if fp16 else ''}.{fp16_note}

## Use

```python
import thermgen
from thermgen import ThermalDiffusionPipeline
pipe = ThermalDiffusionPipeline.from_pretrained(thermgen.pretrained_path("{name}"))
img = pipe("An infrared thermal image of a parking lot at night, seen from 60 m at a steep 60° angle, with eight cars.",
           num_inference_steps=20, guidance_scale=3.0, colormap="ironbow").images[0]
```

or `python -m thermgen.generate --prompt "..." --out samples/`. Offline; runs on a CPU. To make one fact stick, pass
the same prompt with that fact changed as a contrast (contrastive guidance; sampling takes 1.5x the time):
`pipe(prompt, contrast_prompt="... by day ...", contrast_scale=1.5)` or `--contrast-prompt "..."`; for the time of
day, `--contrast-time` writes the contrast itself (the prompt with its day and night words swapped).

## Training

Trained on the HIT-UAV train split (1,200 images of the subset described in the thermgen README) with

    python -m thermgen.train --config hituav-64 --data-source hit-uav --data-root PATH --out runs/{name}

Resolved config:

```yaml
{cfg.strip()}
```

## Evaluation

{gen.read_text() if gen.is_file() else '(no generation report in the run)'}

{judge.read_text() if judge.is_file() else ''}

## Limitations

- 64 x 64 px and 8-bit AGC appearance of HIT-UAV's DJI camera (white-hot, no radiometric temperatures): use it for
  layouts and attributes (time of day, altitude, view angle, people, cars), not for temperatures or fine detail.
- Trained on 1,200 frames from one camera and a few sites; other sensors, heights and scenes are out of distribution.
{prompts_note}

{("## Known gaps" + chr(10) + chr(10) + notes.strip() + chr(10) + chr(10)) if notes else ""}## Data and attribution

HIT-UAV: Suo et al., "HIT-UAV: A high-altitude infrared thermal dataset for Unmanned Aerial Vehicle-based object
detection", *Scientific Data* 10, 227 (2023), doi:10.1038/s41597-023-02066-6, licensed CC BY 4.0
(github.com/suojiashun/HIT-UAV-Infrared-Thermal-Dataset). This model was trained on it and is shared under the same
licence with this attribution.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thermgen.pretrained", description="Package a recipe run's pipeline as a shipped model.")
    p.add_argument("--run", type=Path, required=True, help="recipe run folder (RUN/pipeline, RUN/reports)")
    p.add_argument("--name", required=True, help="model name, e.g. hituav-64")
    p.add_argument("--fp16", action="store_true", help="store the weights in half precision")
    p.add_argument("--notes", type=Path, default=None, help="Markdown file: the model's known gaps, for the card")
    args = p.parse_args(argv)
    try:
        notes = args.notes.read_text() if args.notes is not None else None
        dest = package(args.run, args.name, fp16=args.fp16, notes=notes)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"packaged {dest} ({folder_bytes(dest) / 2**20:.1f} MiB)")
    print(json.dumps(sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
