"""The VAE stage: a thermal ``AutoencoderKL`` for latent diffusion.

Two ways to get one (``cfg["pretrained"]``):

* **From scratch** (``pretrained: null``, the CPU default): a small 1-channel ``AutoencoderKL`` trained on the
  thermal images with a reconstruction loss (L1 or MSE) plus a KL term, and optionally a perceptual term
  (LPIPS-style distance between VGG-16 features; needs a local VGG-16 weights file, since nothing downloads).
* **From a pretrained Stable Diffusion VAE** (``pretrained: <SD folder or VAE folder>``): either kept 3-channel
  (``channels: 3``; the pipeline replicates thermal to 3 channels on encode and averages them on decode) or
  converted to 1 channel (``channels: 1``) by summing the input kernels over the 3 input channels and averaging
  the 3 output rows -- exactly the same function as replicate/average, with a third of the first and last
  convolution's cost -- then optionally fine-tuned (``steps > 0``).

Either way the stage reports reconstruction error on held-out images (JSON + Markdown), a CSV log, the loss
curve and a PNG of originals vs reconstructions, and saves the model with ``save_pretrained`` so that
``AutoencoderKL.from_pretrained(out_dir)`` loads it.

Library use: ``train_vae(cfg, train_images, val_images, out_dir)``; command:
``python -m thermgen.train.vae --images DIR --out DIR [key=value ...]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from tclip.scaffold import csv_tracker, make_trackers, tracker_config
from thermgen.data.sample import DataError

logger = logging.getLogger(__name__)

# Every key train_vae understands, with its default. Configs are data: unknown keys are errors.
VAE_DEFAULTS: dict[str, Any] = {
    # where the model comes from
    "kind": "kl",  # "kl": an AutoencoderKL (trained, or pretrained); "patch": pipelines.PatchAutoencoder, lossless
    # p x p patch folding with nothing to train (pixel-space diffusion at a latent model's cost)
    "patch_size": 4,  # kind "patch": 64 px -> 16 x 16 x 16 latents
    "pretrained": None,  # None: from scratch; else an SD pipeline folder (with vae/) or an AutoencoderKL folder
    "channels": 1,  # 1: single-channel VAE; 3: keep a pretrained 3-channel VAE (replicate / average)
    # architecture (from scratch only); 3 blocks = 4x downsampling: 64 px -> 16x16 latents
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "mid_block_attention": True,
    # data
    "resolution": 64,  # images are resized (shorter side) and centre-cropped to resolution x resolution
    "center_crop": True,  # False: resize to a square, ignoring aspect ratio
    "random_flip": True,  # horizontal flips as augmentation
    # optimisation
    "steps": 300,  # optimiser steps; 0 = no training (e.g. evaluate / convert a pretrained VAE)
    "batch_size": 8,
    "learning_rate": 1e-3,
    "lr_scheduler": "cosine",  # any diffusers.optimization scheduler name
    "lr_warmup_steps": 20,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "mixed_precision": "no",  # "no" | "fp16" | "bf16"
    "seed": 0,
    # loss
    "recon_loss": "l1",  # "l1" | "mse"
    "kl_weight": 1e-6,  # relative to the per-pixel reconstruction sum, as in LDM's kl-f8 autoencoder
    "perceptual_weight": 0.0,  # > 0 adds an LPIPS-style VGG-16 feature distance
    "perceptual_weights": None,  # path to torchvision VGG-16 weights (state dict; .pth/.pt or .safetensors)
    # latent scale written into the saved config: "auto" = 1 / std of training latents;
    # None = "auto" from scratch, keep the pretrained value otherwise; or a number
    "scaling_factor": None,
    # checkpoints (accelerate state + pickle-free extra state) for resume
    "checkpointing_steps": 100,  # save every N steps and at the last step; null: never
    "checkpoints_total_limit": 2,  # keep the newest N; null: all
    # training images are decoded into memory once when they fit in this many MB (null: always), else read from
    # disk for every batch by image_workers DataLoader processes (streamed; the same pixels either way)
    "image_cache_mb": 4096,
    "image_workers": 2,
    # reporting
    "log_every": 10,
    "num_preview": 8,
    "eval_batch_size": 16,
}

REPORT_NAME = "vae_report.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")


# ----------------------------------------------------------------------------- config


def validate_vae_config(cfg: dict[str, Any] | None, prefix: str = "vae.") -> dict[str, Any]:
    """Fill defaults and check every key; errors name the key (``<prefix><key>``, e.g. ``vae.train.steps`` in the
    recipe) and the bad value."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(VAE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown VAE config key(s) {[prefix + k for k in unknown]}; known: {sorted(VAE_DEFAULTS)}")
    out = {**VAE_DEFAULTS, **cfg}

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{prefix}{key} must be {what}, got {out[key]!r}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    need("pretrained", out["pretrained"] is None or isinstance(out["pretrained"], (str, Path)), "null or a folder path")
    need("channels", out["channels"] in (1, 3), "1 or 3")
    need("kind", out["kind"] in ("kl", "patch"), "'kl' or 'patch'")
    need("patch_size", is_int(out["patch_size"]) and out["patch_size"] >= 1
         and not out["patch_size"] & (out["patch_size"] - 1), "a power of two")
    if out["kind"] == "patch":
        need("resolution", out["resolution"] % out["patch_size"] == 0, f"divisible by vae.patch_size {out['patch_size']}")
    if out["pretrained"] is None:
        need("channels", out["channels"] == 1, "1 when training from scratch (3 only keeps a pretrained SD VAE)")
    boc = out["block_out_channels"]
    need("block_out_channels", isinstance(boc, (list, tuple)) and len(boc) >= 1 and all(is_int(c) and c > 0 for c in boc),
         "a non-empty list of positive integers")
    out["block_out_channels"] = [int(c) for c in boc]
    for key in ("layers_per_block", "latent_channels", "norm_num_groups", "resolution", "batch_size",
                "log_every", "num_preview", "eval_batch_size"):
        need(key, is_int(out[key]) and out[key] >= 1, "a positive integer")
    need("norm_num_groups", all(c % out["norm_num_groups"] == 0 for c in out["block_out_channels"]),
         f"a divisor of every block_out_channels entry {out['block_out_channels']}")
    factor = 2 ** (len(out["block_out_channels"]) - 1)
    if out["pretrained"] is None:
        need("resolution", out["resolution"] % factor == 0, f"divisible by the VAE's downsampling factor {factor}")
    for key in ("checkpointing_steps", "checkpoints_total_limit"):
        need(key, out[key] is None or (is_int(out[key]) and out[key] >= 1), "null or a positive integer")
    mb = out["image_cache_mb"]
    need("image_cache_mb", mb is None or (is_num(mb) and mb >= 0), "null or a number of MB >= 0")
    need("image_workers", is_int(out["image_workers"]) and out["image_workers"] >= 0, "an integer >= 0")
    for key in ("mid_block_attention", "center_crop", "random_flip"):
        need(key, isinstance(out[key], bool), "true or false")
    for key in ("steps", "lr_warmup_steps", "seed"):
        need(key, is_int(out[key]) and out[key] >= 0, "an integer >= 0")
    for key in ("learning_rate", "kl_weight", "perceptual_weight", "weight_decay", "max_grad_norm"):
        need(key, is_num(out[key]) and out[key] >= 0, "a number >= 0")
    need("learning_rate", out["learning_rate"] > 0, "> 0")
    need("recon_loss", out["recon_loss"] in ("l1", "mse"), "'l1' or 'mse'")
    need("mixed_precision", out["mixed_precision"] in ("no", "fp16", "bf16"), "'no', 'fp16' or 'bf16'")
    from diffusers.optimization import SchedulerType

    names = [s.value for s in SchedulerType]
    need("lr_scheduler", out["lr_scheduler"] in names, f"one of {names}")
    sf = out["scaling_factor"]
    need("scaling_factor", sf is None or sf == "auto" or (is_num(sf) and sf > 0), "null, 'auto' or a number > 0")
    if out["perceptual_weight"] > 0:
        pw = out["perceptual_weights"]
        need("perceptual_weights", pw is not None, "a VGG-16 weights file when vae.perceptual_weight > 0")
        need("perceptual_weights", Path(pw).is_file(), "an existing file")
    return out


# ----------------------------------------------------------------------------- data


def load_images(
    images: Sequence[str | Path | Any] | torch.Tensor,
    resolution: int,
    center_crop: bool = True,
    what: str = "images",
) -> torch.Tensor:
    """Thermal images as one tensor at the training resolution.

    Args:
        images: image paths (anything ``thermgen.io.read_thermal`` reads), objects with an ``image_path``
            attribute (e.g. :class:`~thermgen.data.sample.ThermalSample`), or a float tensor (N, 1, H, W) in
            [0, 1] (resized if H, W differ from ``resolution``).
        resolution: output side in pixels.
        center_crop: resize the shorter side to ``resolution`` then centre-crop (keeps aspect ratio);
            ``False`` resizes straight to a square.
        what: name used in error messages.

    Returns:
        float32 tensor (N, 1, resolution, resolution) in [0, 1], white-hot ("fixed" normalisation: absolute
        levels survive, so night stays darker than day).
    """
    if torch.is_tensor(images):
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"`{what}` tensor must be (N, 1, H, W), got {tuple(images.shape)}")
        return torch.cat([_fit(im[None].float(), resolution, center_crop) for im in images]) if len(images) else (
            images.float().new_zeros((0, 1, resolution, resolution))
        )
    files = ImageFiles(images, resolution, center_crop)
    if not len(files):
        return torch.zeros((0, 1, resolution, resolution))
    return torch.stack([files[i] for i in range(len(files))])


class ImageFiles(torch.utils.data.Dataset):
    """Thermal image files read lazily at a training resolution: item ``i`` is float32 (1, R, R) in [0, 1].

    The same reading and fitting as :func:`load_images` (which is built on it), one file per item, so a
    ``DataLoader`` over it streams a split of any size (``images``: paths, or objects with an ``image_path``).
    """

    def __init__(self, images: Sequence[str | Path | Any], resolution: int, center_crop: bool = True):
        self.paths = [Path(getattr(item, "image_path", item)) for item in images]
        self.resolution, self.center_crop = int(resolution), bool(center_crop)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from thermgen.io import read_thermal

        arr = read_thermal(self.paths[i], norm="fixed")  # DataError names the file on bad input
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
        return _fit(x, self.resolution, self.center_crop)[0]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape of the tensor :func:`load_images` would return."""
        return (len(self.paths), 1, self.resolution, self.resolution)

    def nbytes(self) -> int:
        return len(self.paths) * self.resolution**2 * 4

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` images as one tensor."""
        return torch.stack([self[i] for i in range(min(n, len(self)))]) if len(self) and n > 0 else (
            torch.zeros((0, 1, self.resolution, self.resolution)))


class _Pixels(torch.utils.data.Dataset):
    """``ImageFiles`` items as 1-tuples, as ``TensorDataset`` gives them."""

    def __init__(self, files: ImageFiles):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        return (self.files[i],)


def training_images(images: Sequence[str | Path | Any] | torch.Tensor, cfg: dict[str, Any],
                    what: str = "train_images") -> torch.Tensor | ImageFiles:
    """Training images at ``cfg["resolution"]``: one tensor (:func:`load_images`) when they fit in
    ``cfg["image_cache_mb"]``, else an :class:`ImageFiles` streamed from disk (a tensor input stays a tensor)."""
    if torch.is_tensor(images):
        return load_images(images, cfg["resolution"], cfg["center_crop"], what=what)
    files = ImageFiles(images, cfg["resolution"], cfg["center_crop"])
    mb = cfg["image_cache_mb"]
    if mb is not None and files.nbytes() > float(mb) * 2**20:
        logger.info("vae: %d %s at %d px take %.0f MB > image_cache_mb %s: streamed from disk", len(files), what,
                    cfg["resolution"], files.nbytes() / 2**20, mb)
        return files
    return load_images(files.paths, cfg["resolution"], cfg["center_crop"], what=what)


def _fit(x: torch.Tensor, resolution: int, center_crop: bool) -> torch.Tensor:
    """(1, 1, H, W) -> (1, 1, R, R): antialiased bilinear resize (+ centre crop)."""
    h, w = x.shape[-2:]
    if (h, w) == (resolution, resolution):
        return x.clamp(0, 1)
    if center_crop:
        scale = resolution / min(h, w)
        nh, nw = max(resolution, round(h * scale)), max(resolution, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - resolution) // 2, (nw - resolution) // 2
        x = x[..., top : top + resolution, left : left + resolution]
    else:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


# ----------------------------------------------------------------------------- models


def build_vae(cfg: dict[str, Any]) -> AutoencoderKL:
    """A randomly initialised 1-channel ``AutoencoderKL`` from a validated config (see :data:`VAE_DEFAULTS`)."""
    n = len(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"],
        latent_channels=cfg["latent_channels"],
        norm_num_groups=cfg["norm_num_groups"],
        sample_size=cfg["resolution"],
        mid_block_add_attention=cfg["mid_block_attention"],
        scaling_factor=1.0,  # replaced by the measured latent scale after training
    )


def load_pretrained_vae(path: str | Path) -> AutoencoderKL:
    """Load an ``AutoencoderKL`` from a local diffusers folder: a Stable Diffusion pipeline folder (its ``vae/``)
    or a VAE folder (``config.json`` + weights). Raises ``DataError`` naming the path when neither is there."""
    path = Path(path)
    if (path / "vae" / "config.json").is_file():
        return AutoencoderKL.from_pretrained(path, subfolder="vae")
    if (path / "config.json").is_file():
        cls = json.loads((path / "config.json").read_text()).get("_class_name")
        if cls not in (None, "AutoencoderKL"):
            raise DataError(f"{path / 'config.json'}: _class_name is {cls!r}, expected 'AutoencoderKL'")
        return AutoencoderKL.from_pretrained(path)
    if path.is_file():
        raise DataError(
            f"{path}: single-file checkpoints are not supported; convert it to a diffusers folder first "
            "(diffusers' AutoencoderKL.from_single_file(...).save_pretrained(dir))"
        )
    raise DataError(f"{path}: no VAE found (expected {path / 'vae' / 'config.json'} or {path / 'config.json'})")


def vae_to_single_channel(vae: AutoencoderKL) -> AutoencoderKL:
    """Convert a 3-channel ``AutoencoderKL`` into an equivalent 1-channel one.

    The encoder's first convolution sees replicated thermal ``[x, x, x]``, so ``W @ [x, x, x] = (sum_c W_c) x``:
    summing its kernels over the input channels gives the same output. The decoder's last convolution's 3
    output rows are averaged (weights and bias), which equals averaging the decoded channels. The result encodes
    and decodes exactly as "replicate on encode, average on decode" does with the original.
    """
    if vae.config.in_channels == 1 and vae.config.out_channels == 1:
        return vae
    config = dict(vae.config)
    config.update(in_channels=1, out_channels=1)
    single = AutoencoderKL.from_config(config)
    state = vae.state_dict()
    state["encoder.conv_in.weight"] = state["encoder.conv_in.weight"].sum(dim=1, keepdim=True)
    state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"].mean(dim=0, keepdim=True)
    state["decoder.conv_out.bias"] = state["decoder.conv_out.bias"].mean(dim=0, keepdim=True)
    single.load_state_dict(state)
    return single.to(device=vae.device, dtype=vae.dtype)


class VGGPerceptualLoss(torch.nn.Module):
    """LPIPS-style distance between VGG-16 features (relu1_2, relu2_2, relu3_3, relu4_3), without LPIPS's learned
    per-channel weights (they are not available offline): channel-normalised features, squared difference, mean.

    ``weights``: a torchvision VGG-16 state dict file (``features.N.*`` keys, or the same without ``features.``);
    only the layers up to the deepest tap present in the file are used, so a file holding just the first blocks
    works too. Loaded with safetensors or ``torch.load(weights_only=True)``.
    """

    TAPS = (3, 8, 15, 22)  # indices of relu1_2, relu2_2, relu3_3, relu4_3 in torchvision's vgg16().features

    def __init__(self, weights: str | Path):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        state = _load_state_dict(Path(weights))
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        features = make_layers(cfgs["D"])
        present = {int(k.split(".")[0]) for k in state}
        taps = [t for t in self.TAPS if all(i in present for i in range(t) if isinstance(features[i], torch.nn.Conv2d))]
        if not taps:
            raise DataError(f"{weights}: no VGG-16 feature weights found (expected keys like 'features.0.weight')")
        self.taps = taps
        self.features = features[: taps[-1] + 1]
        missing, _ = self.features.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[0]) <= taps[-1]},
                                                   strict=False)
        if missing:
            raise DataError(f"{weights}: missing VGG-16 weights {missing[:4]}...")
        self.features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (B, 1, H, W) in [-1, 1]. Returns a scalar."""
        x = torch.cat([a, b]).expand(-1, 3, -1, -1) * 0.5 + 0.5
        x = (x - self.mean) / self.std
        loss = x.new_zeros(())
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                fa, fb = x.chunk(2)
                fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
                fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
                loss = loss + (fa - fb).pow(2).sum(dim=1).mean()
        return loss / len(self.taps)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state.get("state_dict", state)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Deterministic reconstructions (posterior mode) of thermal images.

    images: float (N, 1, H, W) in [0, 1]. Returns float32 (N, 1, H, W) in [0, 1]. A 3-channel VAE gets the image
    replicated and its output channels averaged (as the pipeline does).
    """
    from pipelines import decode_thermal, encode_thermal

    was_training = vae.training
    vae.eval()
    out = []
    for i in range(0, len(images), batch_size):
        z = encode_thermal(vae, images[i : i + batch_size], sample=False)
        out.append(decode_thermal(vae, z).cpu())
    vae.train(was_training)
    return torch.cat(out) if out else images.new_zeros(images.shape)


def reconstruction_metrics(originals: torch.Tensor, recons: torch.Tensor) -> dict[str, float]:
    """Reconstruction error on [0, 1] images (N, 1, H, W): mean L1, MSE, PSNR (dB, peak 1, mean over images) and
    the worst image's L1."""
    diff = (recons.float() - originals.float()).flatten(1)
    l1 = diff.abs().mean(dim=1)
    mse = diff.pow(2).mean(dim=1)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))
    return {
        "l1": float(l1.mean()),
        "mse": float(mse.mean()),
        "psnr_db": float(psnr.mean()),
        "l1_worst": float(l1.max()),
    }


@torch.no_grad()
def evaluate_reconstruction(vae: AutoencoderKL, images: torch.Tensor | ImageFiles, batch_size: int = 16,
                            workers: int = 0, keep: int = 0) -> tuple[dict[str, float], float, torch.Tensor, torch.Tensor]:
    """:func:`reconstruction_metrics` of :func:`reconstruct`, streamed: a batch of images at a time, so a
    held-out split of any size (an :class:`ImageFiles`) is never held whole.

    Returns (metrics, the L1 of predicting each image's own mean (a trivial baseline), the first ``keep`` originals,
    their reconstructions)."""
    from tclip.data import iter_batches

    l1, mse, base, kept_x, kept_r = [], [], [], [], []
    for x in iter_batches(images, batch_size, workers):
        r = reconstruct(vae, x, batch_size)
        diff = (r.float() - x.float()).flatten(1)
        l1.append(diff.abs().mean(dim=1))
        mse.append(diff.pow(2).mean(dim=1))
        base.append((x - x.mean(dim=(1, 2, 3), keepdim=True)).abs().flatten(1).mean(dim=1))
        if sum(len(k) for k in kept_x) < keep:
            kept_x.append(x)
            kept_r.append(r)
    l1_all, mse_all = torch.cat(l1), torch.cat(mse)
    psnr = 10.0 * torch.log10(1.0 / mse_all.clamp_min(1e-12))
    metrics = {"l1": float(l1_all.mean()), "mse": float(mse_all.mean()), "psnr_db": float(psnr.mean()),
               "l1_worst": float(l1_all.max())}
    if not kept_x:
        kept_x = kept_r = [torch.zeros(0, 1, 1, 1)]
    return metrics, float(torch.cat(base).mean()), torch.cat(kept_x)[:keep], torch.cat(kept_r)[:keep]


@torch.no_grad()
def latent_std(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 16, max_images: int = 256) -> float:
    """Standard deviation of unscaled posterior samples over (up to ``max_images``) images; LDM scales latents
    by its inverse so the diffusion model sees unit variance."""
    was_training = vae.training
    vae.eval()
    gen = torch.Generator().manual_seed(0)
    zs = []
    for i in range(0, min(len(images), max_images), batch_size):
        x = images[i : min(i + batch_size, max_images)].to(device=vae.device, dtype=vae.dtype) * 2 - 1
        x = x.expand(-1, vae.config.in_channels, -1, -1)
        dist = vae.encode(x).latent_dist
        noise = torch.randn(dist.mean.shape, generator=gen).to(dist.mean)
        zs.append((dist.mean + dist.std * noise).float().cpu())
    vae.train(was_training)
    return float(torch.cat(zs).std())


# ----------------------------------------------------------------------------- training


def train_vae(
    cfg: dict[str, Any] | None,
    train_images: Sequence[str | Path | Any] | torch.Tensor,
    val_images: Sequence[str | Path | Any] | torch.Tensor,
    out_dir: str | Path,
    *,
    accelerator=None,
    cpu: bool | None = None,
    show_progress: bool = True,
    resume: bool | str = False,
    step_callback=None,
    report_to: str = "csv",
) -> dict[str, Any]:
    """Train (or adapt) a thermal VAE, save it to ``out_dir`` and report reconstruction error on ``val_images``.

    Args:
        cfg: the ``vae`` section of a recipe (keys and defaults: :data:`VAE_DEFAULTS`; unknown or bad keys raise
            ``ValueError`` naming ``vae.<key>``). ``{}`` or ``None`` = the CPU default (a 1-channel VAE from
            scratch, 64 px, 300 steps).
        train_images: training images: paths, objects with ``image_path`` (e.g. ``ThermalSample``), or a float
            tensor (N, 1, H, W) in [0, 1]. Resized/cropped to ``cfg["resolution"]`` (see :func:`load_images`;
            use the same function for the UNet's latents so both stages see the same pixels).
        val_images: held-out images, same forms; used only for the report (at least one image).
        out_dir: output folder; created. Receives the model (``config.json`` +
            ``diffusion_pytorch_model.safetensors``, loadable with ``AutoencoderKL.from_pretrained(out_dir)``),
            ``vae_report.json`` / ``vae_report.md``, ``vae_log.csv`` (step, loss terms, lr), ``vae_loss.png``
            and ``vae_reconstructions.png`` (originals / reconstructions / absolute error).
        accelerator: an ``accelerate.Accelerator`` to run under (e.g. shared with the recipe); default a new one
            (CPU unless CUDA is present, ``cfg["mixed_precision"]``).
        cpu: for that new Accelerator: True runs on the CPU even where CUDA is present (the recipe's
            ``run.device=cpu``), False or None on CUDA when present. Ignored when ``accelerator`` is given.
        show_progress: tqdm progress bar.
        resume: False; True (the newest complete ``out_dir/checkpoints/checkpoint-<step>``, if any) or a checkpoint folder.
            Checkpoints (every ``checkpointing_steps``, the newest ``checkpoints_total_limit`` kept) hold
            accelerate's state (model, optimizer, RNG) plus, without pickles, the lr schedule, the data order's
            and the flips' and posterior samples' generator states, the log rows, the config and the training
            images' sha256: a resumed run ends with the same weights, bit for bit, as one never interrupted (tested
            on CPU). A checkpoint written under another config (naming the keys) or on other images is refused.
            A finished run deletes its checkpoints.
        step_callback: called as ``step_callback(step, loss)`` after every optimizer step (and its checkpoint).

    Returns:
        The report (also written to ``vae_report.json``)::

            {"schema_version": 1, "source": "scratch" | <pretrained path>, "in_channels": 1 | 3,
             "latent_channels": int, "downsample_factor": int, "resolution": int, "parameters": int,
             "steps": int, "batch_size": int, "seconds": float, "train_images": int, "val_images": int,
             "latent_std": float (unscaled, after training), "scaling_factor": float (saved in the config),
             "val_before": {"l1", "mse", "psnr_db", "l1_worst"} (before training; [0, 1] pixel scale),
             "val": {...same keys, after training...}, "val_mean_image_l1": float (error of predicting each
             image's own mean: a trivial baseline to judge "l1" against), "final_loss": float | None,
             "resumed_from": the checkpoint folder training continued from, or None,
             "files": {"model", "log", "loss_plot", "reconstructions", "report_md"}}
    """
    cfg = validate_vae_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    train_x = training_images(train_images, cfg)
    # held out for the report only: in memory within image_cache_mb, else read a batch at a time
    val_x = training_images(val_images, cfg, what="val_images")
    if len(train_x) == 0 and cfg["steps"] > 0:
        raise ValueError("`train_images` is empty but vae.steps > 0")
    if len(val_x) == 0:
        raise ValueError("`val_images` is empty: the VAE stage reports held-out reconstruction error")

    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if accelerator is None:
        from accelerate.utils import DataLoaderConfiguration

        # split_batches: vae.batch_size is the global batch, shared out among the processes, so N processes
        # train on the same batches (and log the same loss curve) as one
        accelerator = Accelerator(cpu=bool(cpu) or not torch.cuda.is_available(), mixed_precision=cfg["mixed_precision"],
                                  dataloader_config=DataLoaderConfiguration(split_batches=True),
                                  log_with=make_trackers("vae", out_dir, filename="vae_log.csv", resume=bool(resume),
                                                         report_to=report_to))
        accelerator.init_trackers("vae", config=tracker_config(cfg))
        own_accelerator = True
    else:
        own_accelerator = False
    if cfg["steps"] > 0 and cfg["batch_size"] % accelerator.num_processes:
        raise ValueError(f"vae.batch_size ({cfg['batch_size']}) must be divisible by the {accelerator.num_processes} "
                         "processes (it is the global batch, split among them)")
    set_seed(cfg["seed"])

    if cfg["kind"] == "patch":
        from pipelines.patch_autoencoder import PatchAutoencoder

        if cfg["pretrained"] is not None:
            raise ValueError("vae.kind 'patch' has no weights: vae.pretrained must be null")
        from tclip.data import iter_batches

        vae = PatchAutoencoder(in_channels=1, patch_size=cfg["patch_size"])
        if isinstance(train_x, ImageFiles):  # streamed: float64 sums over batches
            vae.fit_scale(iter_batches(train_x, 256, cfg["image_workers"]))
        else:
            vae.fit_scale(train_x if len(train_x) else val_x if torch.is_tensor(val_x)
                          else iter_batches(val_x, 256, cfg["image_workers"]))
        cfg = dict(cfg, steps=0, scaling_factor=float(vae.config.scaling_factor))
        source = "patch"
    elif cfg["pretrained"] is None:
        vae = build_vae(cfg)
        source = "scratch"
    else:
        vae = load_pretrained_vae(cfg["pretrained"])
        source = str(cfg["pretrained"])
        if cfg["channels"] == 1:
            vae = vae_to_single_channel(vae)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if cfg["resolution"] % factor:
        raise ValueError(f"vae.resolution must be divisible by the VAE's downsampling factor {factor}, got {cfg['resolution']}")
    vae.to(accelerator.device)
    val_workers = cfg["image_workers"] if isinstance(val_x, ImageFiles) else 0
    val_before = evaluate_reconstruction(vae, val_x, cfg["eval_batch_size"], val_workers)[0]

    perceptual = None
    if cfg["perceptual_weight"] > 0:
        perceptual = VGGPerceptualLoss(cfg["perceptual_weights"]).to(accelerator.device)

    rows: list[dict[str, float]] = []
    resumed_from = None
    if cfg["steps"] > 0:
        rows, resumed_from = _fit_vae(vae, train_x, cfg, accelerator, perceptual, show_progress, out_dir, resume,
                                      own_accelerator,
                                      step_callback)

    vae.eval()
    val_after, val_mean_image_l1, preview, recons = evaluate_reconstruction(
        vae, val_x, cfg["eval_batch_size"], val_workers, keep=cfg["num_preview"])
    head = train_x.head(256) if isinstance(train_x, ImageFiles) else train_x  # latent_std reads the first 256
    if not len(head):
        head = val_x.head(256) if isinstance(val_x, ImageFiles) else val_x
    std = latent_std(vae, head, cfg["eval_batch_size"])
    sf = cfg["scaling_factor"]
    if sf == "auto" or (sf is None and cfg["pretrained"] is None):
        sf = 1.0 / max(std, 1e-6)
    elif sf is None:
        sf = float(vae.config.scaling_factor)
    vae.register_to_config(scaling_factor=float(sf))

    report = {
        "schema_version": 1,
        "source": source,
        "in_channels": int(vae.config.in_channels),
        "latent_channels": int(vae.config.latent_channels),
        "downsample_factor": factor,
        "resolution": cfg["resolution"],
        "parameters": sum(p.numel() for p in vae.parameters()),
        "steps": cfg["steps"],
        "batch_size": cfg["batch_size"],
        "seconds": None,
        "train_images": len(train_x),
        "val_images": len(val_x),
        "latent_std": std,
        "scaling_factor": float(sf),
        "val_before": val_before,
        "val": val_after,
        "val_mean_image_l1": val_mean_image_l1,
        "final_loss": rows[-1]["loss"] if rows else None,
        "resumed_from": resumed_from,
        "files": {
            "model": str(out_dir),
            "log": str(out_dir / "vae_log.csv"),
            "loss_plot": str(out_dir / "vae_loss.png"),
            "reconstructions": str(out_dir / "vae_reconstructions.png"),
            "report_md": str(out_dir / "vae_report.md"),
        },
    }
    if accelerator.is_main_process:
        vae.save_pretrained(out_dir, safe_serialization=True)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # only an interrupted run needs them
        log = csv_tracker(accelerator) if own_accelerator else None
        if log is None or not log.rows_logged:  # a caller's accelerator, or no step logged (vae.steps 0)
            _write_log(out_dir / "vae_log.csv", rows)
        _plot_loss(out_dir / "vae_loss.png", rows)
        _plot_reconstructions(out_dir / "vae_reconstructions.png", preview, recons)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        (out_dir / "vae_report.md").write_text(_report_markdown(report))
    if own_accelerator:
        for tracker in accelerator.trackers:
            tracker.finish()
    accelerator.wait_for_everyone()
    report["seconds"] = report["seconds"] or round(time.perf_counter() - t0, 2)
    return report


def _fit_vae(vae, train_x, cfg, accelerator, perceptual, show_progress, out_dir: Path, resume: bool | str = False,
             own_accelerator: bool = True,
             step_callback=None) -> tuple[list[dict[str, float]], str | None]:
    from diffusers.optimization import get_scheduler

    from tclip.scaffold import Checkpointer

    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    # Stepped once per optimizer step by hand (not prepared), so its state saves as JSON; the same schedule as a
    # prepared one, which steps num_processes times per step over num_processes x the steps.
    lr_scheduler = get_scheduler(cfg["lr_scheduler"], optimizer, num_warmup_steps=cfg["lr_warmup_steps"],
                                 num_training_steps=cfg["steps"])
    loader_gen = torch.Generator().manual_seed(cfg["seed"])
    streamed = isinstance(train_x, ImageFiles)
    workers = cfg["image_workers"] if streamed else 0
    loader = torch.utils.data.DataLoader(
        _Pixels(train_x) if streamed else torch.utils.data.TensorDataset(train_x),
        batch_size=cfg["batch_size"],
        shuffle=True,
        drop_last=len(train_x) >= cfg["batch_size"],
        generator=loader_gen,
        num_workers=workers,
        # not persistent: a new iterator per epoch draws its worker seed from loader_gen as the in-process one
        # does, so the epoch orders (and the weights) stay those of a preloaded run
        persistent_workers=False,
    )
    model = _EncodeDecode(vae)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    world, rank = accelerator.num_processes, accelerator.process_index
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_hw = (cfg["resolution"] // factor, cfg["resolution"] // factor)
    flip_gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    sample_gen = torch.Generator(device=accelerator.device).manual_seed(cfg["seed"] + 2)
    gens = {"flip": flip_gen, "sample": sample_gen}
    pixels = cfg["resolution"] ** 2
    rows: list[dict[str, float]] = []
    ckpt_dir = out_dir / "checkpoints"
    step, skip = 0, 0
    epoch_start = loader_gen.get_state()
    resumed_from = None
    data_sha = images_sha256(train_x)
    checkpoints = Checkpointer(accelerator, ckpt_dir, limit=cfg["checkpoints_total_limit"], lr_scheduler=lr_scheduler)
    if resume:
        path = checkpoints.find(resume)
        if path is None:
            accelerator.print(f"vae: --resume: no complete checkpoint in {ckpt_dir}; starting from step 0")
        else:
            step, skip, epoch_start, rows = _load_vae_checkpoint(checkpoints, path, cfg, data_sha, gens)
            resumed_from = str(path)
            accelerator.print(f"vae: resumed from {path} (step {step})")
    log = csv_tracker(accelerator) if accelerator.is_main_process and own_accelerator else None
    if log is not None:  # the interrupted tail past the checkpoint is trained, and logged, again
        log.drop_rows(lambda r: r["step"] > step)
    bar = tqdm(total=cfg["steps"], initial=step, desc="vae",
               disable=not (show_progress and accelerator.is_local_main_process))
    try:
        while step < cfg["steps"]:
            loader_gen.set_state(epoch_start)  # the state this epoch's order is drawn from (restored on resume)
            for b, (x,) in enumerate(loader):
                if b < skip:  # batches of this epoch a resumed run already trained on
                    continue
                # Every draw is made for the global batch and sliced to this process's share (rank-major, as
                # split_batches shares out the batch), so N processes see the same flips and noise as one.
                share = slice(rank * len(x), (rank + 1) * len(x))
                if cfg["random_flip"]:
                    flip = (torch.rand(len(x) * world, generator=flip_gen) < 0.5)[share]
                    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
                target = x * 2.0 - 1.0
                noise = torch.randn((len(x) * world, vae.config.latent_channels, *latent_hw), generator=sample_gen,
                                    device=sample_gen.device)[share].to(x.device)
                with accelerator.autocast():
                    dec, kl = model(target, noise)
                    rec = (F.l1_loss if cfg["recon_loss"] == "l1" else F.mse_loss)(dec.float(), target.float())
                    # LDM: kl summed over latent elements per image; dividing by the pixel count keeps its weight
                    # relative to a per-pixel reconstruction mean the same as LDM's summed losses.
                    kl = kl.mean() / pixels
                    loss = rec + cfg["kl_weight"] * kl
                    perc = None
                    if perceptual is not None:
                        perc = perceptual(dec.float(), target.float())
                        loss = loss + cfg["perceptual_weight"] * perc
                accelerator.backward(loss)
                if cfg["max_grad_norm"] > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg["max_grad_norm"])
                optimizer.step()
                if not accelerator.optimizer_step_was_skipped:
                    lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                terms = torch.stack([loss.detach().float(), rec.detach().float(), kl.detach().float(),
                                     perc.detach().float() if perc is not None else torch.full_like(rec, float("nan"))])
                if world > 1:  # the global batch's means: each process holds an equal share
                    terms = accelerator.reduce(terms, reduction="mean")
                row = {
                    "step": step,
                    "loss": float(terms[0]),
                    "recon": float(terms[1]),
                    "kl": float(terms[2]),
                    "perceptual": float(terms[3]),
                    "lr": float(lr_scheduler.get_last_lr()[0]),
                }
                if not math.isfinite(row["loss"]):
                    raise FloatingPointError(f"VAE loss became {row['loss']} at step {step}; lower vae.learning_rate")
                if step % cfg["log_every"] == 0 or step == cfg["steps"] or step == 1:
                    rows.append(row)
                    if own_accelerator:  # a caller's accelerator keeps its trackers for its own logs
                        accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step)
                every = cfg["checkpointing_steps"]
                if every and (step % every == 0 or step == cfg["steps"]):
                    # beside accelerate's state: the position in the epoch, the config and the training images'
                    # sha256 (a checkpoint resumes only the run it belongs to), the log rows, the generator states
                    checkpoints.save(step, {"batches_done_in_epoch": b + 1, "config": _jsonable(cfg),
                                            "data_sha256": data_sha, "rows": rows},
                                     {"epoch_start": epoch_start, **{k: g.get_state() for k, g in gens.items()}})
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                if step_callback is not None:
                    step_callback(step, row["loss"])
                if step >= cfg["steps"]:
                    break
            skip = 0
            epoch_start = loader_gen.get_state()
    finally:
        # A loop left early (the last step, or an exception) never reaches the loader's own end(): without it
        # accelerate's process-wide GradientState keeps this loader as the active one for later stages.
        getattr(loader, "end", lambda: None)()
    bar.close()
    return rows, resumed_from


def images_sha256(x: torch.Tensor | ImageFiles) -> str:
    """sha256 of a training tensor's shape and bytes: a checkpoint resumes only on the images it trained on.
    Streamed images (:class:`ImageFiles`) hash to the same digest as their tensor, read one at a time."""
    import hashlib

    h = hashlib.sha256(str(tuple(x.shape)).encode())
    if isinstance(x, ImageFiles):
        for i in range(len(x)):
            h.update(x[i].contiguous().numpy().tobytes())
    else:
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_vae_checkpoint(checkpoints, path: Path, cfg: dict, data_sha: str, gens: dict[str, torch.Generator]):
    """Resume from a checkpoint of this run (same config and training images; checked before anything loads).
    Returns ``(step, batches done in its epoch, the epoch's generator state, log rows)``."""
    meta = checkpoints.meta(path)
    diff = _config_diff(meta["config"], cfg)
    if diff:
        raise ValueError(f"resume: {path} was written under another VAE config (keys differ: "
                         f"{', '.join('vae.' + k for k in diff)}); start over without resume")
    if meta.get("data_sha256") != data_sha:
        raise ValueError(f"resume: {path} was trained on other images (their sha256 differs from these "
                         f"{data_sha[:12]}...); start over without resume")
    step, meta, states = checkpoints.load(path)
    for k, g in gens.items():
        g.set_state(states[k])
    return step, int(meta["batches_done_in_epoch"]), states["epoch_start"], list(meta["rows"])


# Keys that may change between an interrupted run and its resume: they do not touch the training trajectory.
_RESUME_FREE_KEYS = ("checkpointing_steps", "checkpoints_total_limit", "num_preview", "eval_batch_size", "image_cache_mb",
                     "image_workers")


def resumable_checkpoint(out_dir: str | Path, cfg: dict[str, Any] | None) -> Path | None:
    """The newest VAE checkpoint in ``out_dir/checkpoints`` written under this config (keys as ``train_vae``
    takes them), or None."""
    from tclip.scaffold import Checkpointer

    ckpt = Checkpointer(None, Path(out_dir) / "checkpoints").latest()
    if ckpt is None:
        return None
    saved = Checkpointer.meta(ckpt)["config"]
    return None if _config_diff(saved, validate_vae_config(cfg)) else ckpt


def _config_diff(saved: dict, cfg: dict) -> list[str]:
    """Keys whose value in a checkpoint's saved config differs from ``cfg`` (validated), bar
    :data:`_RESUME_FREE_KEYS`."""
    now = _jsonable(cfg)
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in _RESUME_FREE_KEYS)


def _jsonable(cfg: dict) -> dict:
    return json.loads(json.dumps(cfg, default=str))


class _EncodeDecode(torch.nn.Module):
    """One forward pass for training: encode, sample the posterior, decode. A single ``forward`` so that DDP
    (which hooks ``forward``) synchronises gradients; a 3-channel VAE gets thermal replicated and its output
    channels averaged, as in the pipeline."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, noise: torch.Tensor):
        """x: (B, 1, H, W) in [-1, 1]; noise: the posterior sample's standard normal draw, (B, C, h, w).
        Returns (decoded (B, 1, H, W), per-image KL (B,))."""
        if self.vae.config.in_channels != 1:
            x = x.expand(-1, self.vae.config.in_channels, -1, -1)
        posterior = self.vae.encode(x).latent_dist
        dec = self.vae.decode(posterior.mean + posterior.std * noise.to(posterior.mean.dtype)).sample
        if dec.shape[1] != 1:
            dec = dec.mean(dim=1, keepdim=True)
        return dec, posterior.kl()


# ----------------------------------------------------------------------------- outputs


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    fields = ["step", "loss", "recon", "kl", "perceptual", "lr"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _plot_loss(path: Path, rows: list[dict[str, float]]) -> None:
    from tclip.scaffold import plot_rows

    if not plot_rows(rows, path, y=("recon", "loss"), title="VAE training", ylabel="loss (recon: reconstruction)",
                     logy=True):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.text(0.5, 0.5, "no training steps (vae.steps = 0)", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("VAE training")
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _plot_reconstructions(path: Path, originals: torch.Tensor, recons: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(originals), 1)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n + 0.8, 5.2), squeeze=False)
    for i in range(len(originals)):
        o, r = originals[i, 0].numpy(), recons[i, 0].numpy()
        for row, (img, kw) in enumerate(
            ((o, dict(cmap="gray", vmin=0, vmax=1)), (r, dict(cmap="gray", vmin=0, vmax=1)),
             (np.abs(o - r), dict(cmap="magma", vmin=0, vmax=0.25)))
        ):
            axes[row, i].imshow(img, **kw)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for row, label in enumerate(("original", "reconstruction", "|error| (0-0.25)")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("VAE: held-out images (white-hot)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _report_markdown(r: dict[str, Any]) -> str:
    v, b = r["val"], r["val_before"]
    return (
        "# VAE stage\n\n"
        f"- source: {r['source']}; {r['in_channels']}-channel input, {r['latent_channels']} latent channels, "
        f"downsampling x{r['downsample_factor']}, {r['parameters']:,} parameters\n"
        f"- training: {r['steps']} steps at batch {r['batch_size']}, {r['resolution']} px, "
        f"{r['train_images']} images, {r['seconds']} s\n"
        f"- latent std {r['latent_std']:.4f} -> scaling_factor {r['scaling_factor']:.4f}\n\n"
        f"Held-out reconstruction ({r['val_images']} images, pixel values in [0, 1]):\n\n"
        "| | L1 | MSE | PSNR (dB) | worst L1 |\n| --- | --- | --- | --- | --- |\n"
        f"| before training | {b['l1']:.4f} | {b['mse']:.5f} | {b['psnr_db']:.2f} | {b['l1_worst']:.4f} |\n"
        f"| after training | {v['l1']:.4f} | {v['mse']:.5f} | {v['psnr_db']:.2f} | {v['l1_worst']:.4f} |\n\n"
        f"Trivial baseline (each image's own mean): L1 {r['val_mean_image_l1']:.4f}.\n\n"
        "![reconstructions](vae_reconstructions.png)\n\n![loss](vae_loss.png)\n"
    )


# ----------------------------------------------------------------------------- command


def _parse_override(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. steps=200)")
    key, value = text.split("=", 1)
    key = key.strip().removeprefix("vae.")
    if key not in VAE_DEFAULTS:
        raise ValueError(f"unknown VAE config key 'vae.{key}' in override {text!r}; known: {sorted(VAE_DEFAULTS)}")
    return key, yaml.safe_load(value)


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m thermgen.train.vae",
        description="Train a 1-channel thermal AutoencoderKL from scratch, or adapt a pretrained Stable Diffusion "
        "VAE, and report held-out reconstruction error. Config keys (key=value): "
        + ", ".join(f"{k} (default {v!r})" for k, v in VAE_DEFAULTS.items()),
    )
    parser.add_argument("--images", type=Path, required=True,
                        help="folder of thermal images (searched recursively) used for training")
    parser.add_argument("--val-images", type=Path, default=None,
                        help="folder of held-out images (default: hold out --val-fraction of --images)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of --images held out when --val-images is not given (default 0.1)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file holding the VAE keys (top level or under 'vae:') (default: none)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the model and reports")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")
    parser.add_argument("--report-to", choices=("csv", "tensorboard"), default="csv",
                        help="loss log: OUT/vae_log.csv always; tensorboard also writes OUT/vae/ (when installed)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in OUT/checkpoints (same config; default: start over)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. steps=200 resolution=64")
    args = parser.parse_args(argv)

    cfg: dict[str, Any] = {}
    if args.config is not None:
        import yaml

        loaded = yaml.safe_load(args.config.read_text()) or {}
        cfg = dict(loaded.get("vae", loaded)) if isinstance(loaded, dict) else {}
    try:
        cfg.update(dict(_parse_override(o) for o in args.overrides))
        files = _list_images(args.images)
        if args.val_images is not None:
            train, val = files, _list_images(args.val_images)
        else:
            if not 0 < args.val_fraction < 1:
                raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
            rng = np.random.default_rng(0)
            order = rng.permutation(len(files))
            n_val = max(1, round(len(files) * args.val_fraction))
            val = [files[i] for i in sorted(order[:n_val])]
            train = [files[i] for i in sorted(order[n_val:])]
        report = train_vae(cfg, train, val, args.out, show_progress=not args.no_progress, resume=args.resume,
                           report_to=args.report_to)
    except (ValueError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    v = report["val"]
    print(f"VAE saved to {args.out}: held-out L1 {v['l1']:.4f}, PSNR {v['psnr_db']:.2f} dB "
          f"({report['val_images']} images); report {args.out / REPORT_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
