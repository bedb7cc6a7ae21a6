"""A base's batch-norm statistics re-estimated on a new camera's unlabelled frames (AdaBN).

`python -m tclip.adabn --base local-dir:BASE --images MANIFEST_OR_FOLDER [--split train] --out FOLDER`

A ResNet image tower normalises every convolution's output with running means and variances that were
measured on its pretraining images. When the images change domain (synthetic scenes to a real thermal
camera), those statistics are the first thing that no longer fits. AdaBN (Li et al., "Revisiting Batch
Normalization For Practical Domain Adaptation", 2016) re-estimates them on images of the new domain:
no labels and no gradients; every weight stays as it was, only the batch-norm buffers change. The
result is written as an ordinary open_clip checkpoint folder (the layout of
:func:`tclip.model.save_open_clip_folder`), so `tclip.train --base local-dir:FOLDER` adapts it like any
pretrained base and `open_clip.create_model("local-dir:FOLDER")` loads it without tclip. Its
`open_clip_config.json` records where the statistics came from (`thermgen.batchnorm_stats`).

A tower without batch norms (a ViT) has nothing to re-estimate and is refused.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

__all__ = ["batchnorm_layers", "recompute_batchnorm_stats", "has_batchnorm", "image_paths", "adapt_base", "main"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of `model` that keeps running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batchnorm_stats(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace the running mean and variance of every batch norm in `model` by their average over `batches`.

    Each batch is passed through `model` (a forward call on the preprocessed input) with only the batch
    norms in train mode (dropout and the rest in eval mode) and momentum ``None``: a cumulative average over
    batches, as ``torch.optim.swa_utils.update_bn`` does, not an exponential one. Weights are untouched; every
    module is left in the mode it was in. If a batch fails, the statistics are put back as they were. A batch
    of one image (no batch variance) is left out and logged. Returns the number of images used.
    """
    bns = batchnorm_layers(model)
    if not bns:
        raise ValueError("the model has no batch-norm layers with running statistics (e.g. a ViT tower): nothing to re-estimate")
    modes = {m: m.training for m in model.modules()}
    saved = [(bn.momentum, bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.eval()
    for bn in bns:
        bn.train()
    n = skipped = 0
    done = False
    try:
        for x in batches:
            if x.shape[0] < 2:
                skipped += int(x.shape[0])  # one image has no batch variance (a last, short batch)
                continue
            model(x)
            n += int(x.shape[0])
        if n == 0:
            raise ValueError("no batch of two or more images reached the batch norms; nothing was re-estimated")
        done = True
    finally:
        for bn, (momentum, mean, var, count) in zip(bns, saved):
            bn.momentum = momentum
            if not done:
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.num_batches_tracked.copy_(count)
        for m, training in modes.items():
            m.training = training
    if skipped:
        logger.warning("batch-norm statistics: %d image(s) in batches of one left out (%d used)", skipped, n)
    return n


def has_batchnorm(arch_config: dict) -> bool:
    """Whether the image tower of an open_clip architecture config (``model_cfg``) has batch norms to re-estimate."""
    from .model import _instantiate

    return bool(batchnorm_layers(_instantiate(arch_config).visual))


def image_paths(source: str | Path, split: str | None = None) -> list[Path]:
    """The images of a thermgen/T-CLIP manifest (one split, or all) or of a folder (its image files, sorted)."""
    from .data import read_manifest

    source = Path(source)
    if source.is_dir():
        if split is not None:
            raise ValueError(f"{source}: --split applies to a manifest, not to a folder of images")
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        return paths
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such manifest or folder")
    paths = [r.image for r in read_manifest(source, split=split)]
    if not paths:
        raise ValueError(f"{source}: no records" + (f" in split {split!r}" if split else ""))
    return paths


def adapt_base(base: str, paths: list[Path], out: str | Path, *, batch_size: int = 64, seed: int = 0, source: str | None = None,
               progress: bool = True, workers: int = 2) -> Path:
    """Write the base `base` (a `--base` spec with a known architecture) with its image tower's batch-norm
    statistics re-estimated on `paths`, as an open_clip checkpoint folder `out`. Returns `out`.

    The images are taken in a random order (`seed`): each batch's variance is measured about its own mean,
    so batches of consecutive frames of one flight would leave out the variance between flights."""
    from .data import ThermalImages, iter_batches
    from .model import LOCAL_DIR, build_base, preprocess_thermal, read_open_clip_folder, save_open_clip_folder

    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (a batch variance), got {batch_size}")
    if base.startswith(LOCAL_DIR):
        base = LOCAL_DIR + str(Path(base[len(LOCAL_DIR):]).resolve())
        if Path(base[len(LOCAL_DIR):]) == Path(out).resolve():
            raise ValueError(f"--out {out} is the base folder itself; write the adapted base to another folder")
    model, info = build_base(base)
    if not info.get("arch_config"):
        raise ValueError(f"--base {base}: its architecture config is unknown (a hub schema); cannot write it as a folder")
    visual = model.visual
    size = tuple(info["image_size"])
    mean = torch.tensor(info["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(info["std"]).view(1, 3, 1, 1)
    order = list(paths)
    random.Random(seed).shuffle(order)
    images = ThermalImages(order, size)

    def batches():
        it = iter_batches(images, batch_size, workers=workers)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=-(-len(images) // batch_size), desc="batch-norm statistics", leave=False)
        for x in it:
            yield preprocess_thermal(x, size, mean, std)

    n = recompute_batchnorm_stats(visual, batches())
    extra: dict = {}
    if str(info["arch"]).startswith(LOCAL_DIR):
        extra = dict(read_open_clip_folder(str(info["arch"])[len(LOCAL_DIR):]).get("thermgen", {}))
    extra["batchnorm_stats"] = {
        "method": "AdaBN: running means and variances re-estimated on unlabelled images; weights unchanged",
        "from_base": str(base),
        "source": source if source is not None else f"{len(paths)} image files",
        "images": n,
        "images_left_out": len(paths) - n,  # a last batch of one image (no batch variance)
        "layers": len(batchnorm_layers(visual)),
        "batch_size": batch_size,
        "shuffle_seed": seed,
    }
    folder = save_open_clip_folder(model, info["arch_config"], out, info["mean"], info["std"], extra)
    logger.info("batch-norm statistics of %d layers re-estimated on %d images; base written to %s",
                extra["batchnorm_stats"]["layers"], n, folder)
    return folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tclip.adabn", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base", required=True, help="the base (a tclip --base spec, e.g. local-dir:FOLDER)")
    p.add_argument("--images", type=Path, required=True, help="a manifest (JSON Lines) or a folder of thermal images")
    p.add_argument("--split", default=None, help="the manifest split to use (default: every record)")
    p.add_argument("--out", type=Path, required=True, help="the open_clip checkpoint folder to write")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch-norm batch")
    p.add_argument("--workers", type=int, default=2, help="image-reading processes")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        paths = image_paths(args.images, args.split)
        source = str(args.images.resolve()) + (f" (split {args.split})" if args.split else "")
        adapt_base(args.base, paths, args.out, batch_size=args.batch_size, source=source, progress=not args.no_progress,
                   workers=args.workers)
    except (FileNotFoundError, ValueError) as exc:
        print(f"tclip.adabn: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
