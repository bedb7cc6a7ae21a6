"""Feature extractors by name, for FID/KID and the attribute judge: the lowest layer of :mod:`thermgen.metrics`.

``build_feature_extractor("inception")`` is the standard FID Inception (offline weights,
:mod:`thermgen.metrics.inception`); ``"tclip:DIR"`` is :class:`TCLIPImageFeatures`, T-CLIP's image tower.
Nothing here imports the metric modules (:mod:`~thermgen.metrics.fid`, :mod:`~thermgen.metrics.tclip_metrics`,
:mod:`~thermgen.metrics.report`), which all import this one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

IMAGE_VARIANT = "dual"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def folder_sha256(folder: str | os.PathLike, suffixes: tuple[str, ...] | None = None,
                  skip_dirs: tuple[str, ...] = ()) -> str:
    """sha256 over every file (relative path + bytes) under ``folder``: identifies a T-CLIP folder's weights.
    ``suffixes``: only files with these suffixes; ``skip_dirs``: leave out files under folders of these names."""
    root = Path(folder)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and (suffixes is None or q.suffix in suffixes)
                    and not set(skip_dirs) & set(q.relative_to(root).parts[:-1])):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def load_tclip(tclip_dir: str | os.PathLike, device: torch.device | str | None = None) -> nn.Module:
    """``tclip.load(dir)`` in eval mode on ``device``."""
    import tclip

    path = Path(tclip_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"T-CLIP folder not found: {path}")
    return tclip.load(path, device=device or default_device()).eval()


class TCLIPImageFeatures(nn.Module):
    """T-CLIP image embeddings as a feature extractor for :func:`thermgen.metrics.fid.compute_metrics`.

    forward: float ``(B, 1, H, W)`` in [0, 1], white-hot -> float32 ``(B, D)``, L2-normalised
    (``model.encode_image(images, variant)``). ``input_kind = "thermal"`` tells the metric code to
    feed thermal images at the comparison resolution rather than clean-fid's 299x299 RGB.
    """

    input_kind = "thermal"

    def __init__(self, tclip: str | os.PathLike | nn.Module, variant: str = IMAGE_VARIANT, device: torch.device | str | None = None):
        super().__init__()
        if isinstance(tclip, nn.Module):
            self.model, self.tclip_dir, self.cache_id = tclip, None, None  # an in-memory model cannot be identified: no cache
        else:
            self.model = load_tclip(tclip, device)
            self.tclip_dir = str(Path(tclip))
            self.cache_id = f"tclip-{variant}:{folder_sha256(tclip)}"
        self.variant = variant
        self.name = f"tclip-{variant}"

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"TCLIPImageFeatures expects (B, 1, H, W) in [0, 1], got {tuple(x.shape)}")
        return self.model.encode_image(x, variant=self.variant).float()


_INCEPTION: dict[tuple, nn.Module] = {}


def shared_inception(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """The FID :class:`~thermgen.metrics.inception.InceptionFeatures`, built once per process and reused.

    Building it (TorchScript load and batch-norm folding) takes about a second; a bench that judges many image
    folders (``thermgen.bench.control``: every checkpoint, seed and swap side) built it dozens of times. The network
    is stateless and in eval mode; the cache holds the last one asked for (weights file, its size and mtime, device),
    so a changed file or another device builds a new one. Callers must not modify it (``.to()``, ``.half()``).
    """
    from thermgen.metrics.inception import InceptionFeatures, find_inception_weights

    weights = find_inception_weights(path).resolve()
    st = weights.stat()
    key = (InceptionFeatures, str(weights), st.st_size, st.st_mtime_ns, str(torch.device(device)))
    model = _INCEPTION.get(key)
    if model is None:
        _INCEPTION.clear()  # one network (about 95 MB) kept at a time
        model = _INCEPTION[key] = InceptionFeatures(weights, device=device)
    return model


def clear_shared_inception() -> None:
    """Drop the network :func:`shared_inception` keeps (a timing that must include building it)."""
    _INCEPTION.clear()


def build_feature_extractor(feature: str | Callable, device: torch.device | str | None = None, inception_path: str | os.PathLike | None = None) -> Callable:
    """``"inception"`` -> :class:`~thermgen.metrics.inception.InceptionFeatures`; ``"tclip:DIR"`` ->
    :class:`TCLIPImageFeatures` (dual variant); a callable is returned as is."""
    if callable(feature):
        return feature
    if feature == "inception":
        return shared_inception(inception_path, device or default_device())
    if isinstance(feature, str) and feature.startswith("tclip:") and len(feature) > len("tclip:"):
        return TCLIPImageFeatures(feature.split(":", 1)[1], device=device or default_device())
    raise ValueError(f"feature must be 'inception', 'tclip:DIR' or a callable, got {feature!r}")
