"""``python -m thermgen.generate``: thermal images from text with a saved ThermalDiffusionPipeline.

Writes one PNG per image (8-bit grey, 16-bit grey, or 8-bit colour through a thermal colormap), a grid PNG
(rows = prompts, columns = seeds) and ``generation.json`` (what was run and which file is which).

Seeds: image ``k`` of every prompt is drawn from seed ``--seed + k``, so different prompts are compared on the
same starting noise, and image ``k`` is the same whether ``--n`` is 1 or 100.

Library use: ``main(argv)``; samplers by name: :mod:`thermgen.schedulers`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thermgen.schedulers import SCHEDULER_NAMES, make_scheduler
from thermgen.schedulers import scheduler_class as _scheduler_class

# Default weight of the contrastive guidance branch (--contrast-prompt), chosen on HIT-UAV val
# (python -m thermgen.bench.control --contrast time_of_day --contrast-scale ...; docs/results-generation.md).
CONTRAST_SCALE = 1.5


@contextmanager
def pipeline_warnings(echo: bool = False) -> Iterator[list[str]]:
    """Collect the warnings the pipeline logs inside the ``with`` block, each distinct message once.

    Yields the list the messages are appended to (e.g. a prompt over the text encoder's 77 tokens: "The following
    part of your input was truncated ...: ['dropped words']"). The pipeline warns on every call; this keeps one
    copy. ``echo``: also print each new message to stderr as ``warning: ...``. While the block runs the messages
    do not reach other logging handlers (the caller reports them). Warnings from every thread are collected, so
    run one generation at a time inside the block.
    """
    from pipelines import pipeline_thermal_diffusion

    log = logging.getLogger(pipeline_thermal_diffusion.__name__)
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if msg not in messages:
                messages.append(msg)
                if echo:
                    print(f"warning: {msg}", file=sys.stderr, flush=True)

    handler = _Collect(logging.WARNING)
    propagate = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield messages
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m thermgen.generate",
        description="Generate thermal images from text with a saved ThermalDiffusionPipeline folder "
        "(e.g. RUN/pipeline from python -m thermgen.train). Writes PNGs, a grid PNG and generation.json.",
    )
    p.add_argument("--pipeline", type=Path, default=None, help="pipeline folder (model_index.json, unet/, vae/, ...); "
                   "default: the model shipped with the package (thermgen.pretrained_path('hituav-64'))")
    p.add_argument("--prompt", action="append", required=True,
                   help="scene prompt, e.g. 'An infrared thermal image of a parking lot at night'; repeat for several")
    p.add_argument("--prompt-fine", action="append", default=None,
                   help="fine-grained prompt ('Thermal infrared image ...'): once for all prompts or once per "
                   "--prompt (default: none; the text encoder's mode decides)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt for guidance (default: the empty prompt)")
    p.add_argument("--contrast-prompt", action="append", default=None,
                   help="contrastive guidance: the prompt with the one fact you want enforced edited (for 'a road at "
                   "night', 'a road by day'); once for all prompts or once per --prompt. Each step adds "
                   "--contrast-scale x (prompt - contrast) to the guided prediction (default: none)")
    p.add_argument("--contrast-prompt-fine", action="append", default=None,
                   help="the contrast's fine-grained prompt (needed with --prompt-fine: the fine prompt with the same "
                   "fact edited); once for all or once per --prompt")
    p.add_argument("--contrast-time", action="store_true",
                   help="contrastive guidance along the stated time of day: each prompt's contrast is the prompt with "
                   "its day/night words swapped ('a road at night' -> 'a road by day'; thermgen.ircap.swap."
                   "swap_time_words), the fine prompt's too; instead of --contrast-prompt")
    p.add_argument("--contrast-scale", type=float, default=None,
                   help=f"weight of the contrast branch (default {CONTRAST_SCALE} with --contrast-prompt)")
    p.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="guidance (classifier-free and contrast) only at the steps whose noise level sigma lies in "
                   "(LOW, HIGH] (Kynkaanniemi et al. 2024; default: every step)")
    p.add_argument("--seed", type=int, default=0, help="seed of image 0; image k uses seed + k (default 0)")
    p.add_argument("--n", type=int, default=4, help="images per prompt (default 4)")
    p.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    p.add_argument("--guidance", type=float, default=5.0,
                   help="classifier-free guidance scale; <= 1 disables guidance (default 5.0)")
    p.add_argument("--scheduler", default=None,
                   help=f"sampler: one of {', '.join(SCHEDULER_NAMES)} or a diffusers scheduler class name "
                   "(default: the pipeline's own)")
    p.add_argument("--colormap", default=None,
                   help="write colour PNGs through this colormap (white-hot, black-hot, ironbow, inferno or any "
                   "matplotlib name); 8-bit only (default: none, grey white-hot)")
    p.add_argument("--bits", type=int, default=8, choices=[8, 16],
                   help="bit depth of the grey PNGs: 8 or 16 (full range = the model's [0, 1]) (default 8)")
    p.add_argument("--height", type=int, default=None, help="image height in pixels (default: the pipeline's)")
    p.add_argument("--width", type=int, default=None, help="image width in pixels (default: the pipeline's)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--out", type=Path, required=True, help="output folder for the PNGs, grid.png and generation.json")
    return p


def _check_args(args: argparse.Namespace) -> None:
    for name in ("n", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.prompt_fine is not None and len(args.prompt_fine) not in (1, len(args.prompt)):
        raise ValueError(f"--prompt-fine given {len(args.prompt_fine)} times; give it once or once per --prompt ({len(args.prompt)})")
    if getattr(args, "contrast_time", False):
        from thermgen.ircap.swap import swap_time_words

        if args.contrast_prompt is not None or args.contrast_prompt_fine is not None:
            raise ValueError("--contrast-time writes the contrast prompts itself: give it without --contrast-prompt / "
                             "--contrast-prompt-fine")
        for flag, texts in (("--prompt", args.prompt), ("--prompt-fine", args.prompt_fine or [])):
            for t in texts:
                if swap_time_words(t) is None:
                    raise ValueError(f"--contrast-time: {flag} {t!r} states no time of day (day, night, daytime, "
                                     "at night, after dark, ...): nothing to contrast")
        args.contrast_prompt = [swap_time_words(t) for t in args.prompt]
        if args.prompt_fine is not None:
            args.contrast_prompt_fine = [swap_time_words(t) for t in args.prompt_fine]
    if args.contrast_prompt is not None and len(args.contrast_prompt) not in (1, len(args.prompt)):
        raise ValueError(f"--contrast-prompt given {len(args.contrast_prompt)} times; give it once or once per "
                         f"--prompt ({len(args.prompt)})")
    if args.contrast_prompt_fine is not None and args.contrast_prompt is None:
        raise ValueError("--contrast-prompt-fine needs --contrast-prompt")
    if args.contrast_prompt_fine is not None and len(args.contrast_prompt_fine) not in (1, len(args.prompt)):
        raise ValueError(f"--contrast-prompt-fine given {len(args.contrast_prompt_fine)} times; give it once or once "
                         f"per --prompt ({len(args.prompt)})")
    if args.contrast_prompt is not None and args.prompt_fine is not None and args.contrast_prompt_fine is None:
        raise ValueError("--prompt-fine is given, so --contrast-prompt needs --contrast-prompt-fine too (the fine "
                         "prompt with the same fact edited)")
    if args.contrast_scale is not None and args.contrast_prompt is None:
        raise ValueError("--contrast-scale needs --contrast-prompt")
    if args.contrast_scale is not None and not 0 < args.contrast_scale < float("inf"):
        raise ValueError(f"--contrast-scale must be a finite number > 0, got {args.contrast_scale}")
    if args.colormap is not None and args.bits == 16:
        raise ValueError("--colormap renders 8-bit colour; it cannot be combined with --bits 16")
    if args.pipeline is None:
        from thermgen.pretrained import pretrained_path

        try:
            args.pipeline = pretrained_path()
        except FileNotFoundError as e:
            raise ValueError(f"no --pipeline given and {e}") from None
    if not (args.pipeline / "model_index.json").is_file():
        from thermgen.data.sample import DataError

        raise DataError(f"{args.pipeline}: not a pipeline folder (no model_index.json)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
        if args.colormap is not None:
            from pipelines.colormaps import check_colormap

            check_colormap(args.colormap)
        if args.scheduler is not None:
            _scheduler_class(args.scheduler)
    except ValueError as err:  # DataError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2

    from pipelines import ThermalDiffusionPipeline

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = ThermalDiffusionPipeline.from_pretrained(args.pipeline)
    pipe.to(device)
    pipe.enable_xformers_if_available()
    if args.scheduler is not None:
        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    fines = args.prompt_fine
    if fines is not None and len(fines) == 1:
        fines = fines * len(args.prompt)

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    grid: list[list[np.ndarray]] = []
    with pipeline_warnings(echo=True) as warnings:  # e.g. a prompt over 77 tokens: printed once, not per batch
        status = _generate_all(args, pipe, fines, records, grid)
    if status:
        return status
    return _finish(args, pipe, grid, records, warnings, t0)


def _generate_all(args, pipe, fines, records: list[dict[str, Any]], grid: list[list[np.ndarray]]) -> int:
    """Run every prompt and seed, writing one PNG per image; fills ``records`` and ``grid``. Returns 0 or 2."""
    try:
        for i, prompt in enumerate(args.prompt):
            row: list[np.ndarray] = []
            seeds = [args.seed + k for k in range(args.n)]
            contrast = contrast_fine = None
            c_scale = args.contrast_scale or CONTRAST_SCALE
            if args.contrast_prompt is not None:
                contrast = args.contrast_prompt[0 if len(args.contrast_prompt) == 1 else i]
            if args.contrast_prompt_fine is not None:
                contrast_fine = args.contrast_prompt_fine[0 if len(args.contrast_prompt_fine) == 1 else i]
            for start in range(0, args.n, args.batch_size):
                chunk = seeds[start : start + args.batch_size]
                # one generator per image: image k depends only on its own seed, not on --n or --batch-size
                gens = [torch.Generator(device="cpu").manual_seed(s) for s in chunk]
                out = pipe(
                    prompt=[prompt] * len(chunk),
                    prompt_fine=None if fines is None else [fines[i]] * len(chunk),
                    negative_prompt=args.negative_prompt,
                    contrast_prompt=None if contrast is None else [contrast] * len(chunk),
                    contrast_prompt_fine=None if contrast_fine is None else [contrast_fine] * len(chunk),
                    contrast_scale=0.0 if contrast is None else c_scale,
                    height=args.height,
                    width=args.width,
                    num_inference_steps=args.steps,
                    guidance_scale=args.guidance,
                    guidance_interval=None if args.guidance_interval is None else tuple(args.guidance_interval),
                    generator=gens,
                    output_type="np",
                )
                for seed, img in zip(chunk, out.images[..., 0]):
                    path = args.out / f"prompt{i:02d}_seed{seed}.png"
                    _write_image(path, img, args.bits, args.colormap)
                    row.append(img)
                    records.append({"file": path.name, "prompt_index": i, "prompt": prompt,
                                    "prompt_fine": None if fines is None else fines[i], "seed": seed,
                                    **({} if contrast is None else
                                       {"contrast_prompt": contrast, "contrast_prompt_fine": contrast_fine,
                                        "contrast_scale": c_scale}),
                                    **({} if args.guidance_interval is None else
                                       {"guidance_interval": list(args.guidance_interval)}),
                                    "mean": float(img.mean()), "std": float(img.std())})
            grid.append(row)
    except ValueError as err:  # bad size etc., named by the pipeline's check_inputs
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _finish(args, pipe, grid, records, warnings: list[str], t0: float) -> int:
    """Write grid.png and generation.json, print the summary line."""
    grid_path = args.out / "grid.png"
    save_grid(grid_path, grid, args.prompt, [args.seed + k for k in range(args.n)], args.colormap)
    summary = {
        "pipeline": str(args.pipeline),
        "scheduler": type(pipe.scheduler).__name__,
        "steps": args.steps,
        "guidance": args.guidance,
        "bits": args.bits,
        "colormap": args.colormap,
        "size": list(grid[0][0].shape),
        "seconds": round(time.perf_counter() - t0, 2),
        "grid": grid_path.name,
        "warnings": warnings,
        "images": records,
    }
    (args.out / "generation.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(records)} images and {grid_path.name} written to {args.out} ({summary['seconds']} s)")
    return 0


def _write_image(path: Path, img: np.ndarray, bits: int, colormap: str | None) -> None:
    """img: float (H, W) in [0, 1], white-hot."""
    from thermgen.io import write_png8, write_png16

    if colormap is not None:
        from pipelines.colormaps import apply_colormap

        write_png8(path, apply_colormap(img, colormap))
    elif bits == 16:
        write_png16(path, np.round(np.clip(img, 0, 1) * 65535.0).astype(np.uint16))
    else:
        write_png8(path, np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8))


def save_grid(
    path: Path,
    rows: list[list[np.ndarray]],
    row_labels: list[str],
    col_seeds: list[int],
    colormap: str | None = None,
    col_labels: list[str] | None = None,
) -> Path:
    """Save a grid PNG (matplotlib): one row per prompt (labelled with it), one column per seed.

    rows: per row, float images (H, W) in [0, 1], white-hot. Grey unless ``colormap`` is given (a grey grid is
    stored as a 1-channel PNG, a third of matplotlib's RGBA size).
    col_labels: column titles (default: "seed <s>" for ``col_seeds``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.colormaps import apply_colormap

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.8 * n_cols + 2.2, 1.9 * n_rows + 0.3), squeeze=False)
    for r, images in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images):
                ax.axis("off")
                continue
            if colormap is None:
                ax.imshow(images[c], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(apply_colormap(images[c], colormap))
            if r == 0:
                ax.set_title(col_labels[c] if col_labels is not None else f"seed {col_seeds[c]}", fontsize=8)
        axes[r, 0].set_ylabel(textwrap.fill(row_labels[r], 28), fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    if colormap is None:
        import io

        from PIL import Image

        buf = io.BytesIO()
        fig.savefig(buf, dpi=100, format="png")
        Image.open(buf).convert("L").save(path, optimize=True)
    else:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
