"""Replicate single-channel thermal images to three channels for RGB-pretrained models.

CLIP-style image towers and SD VAEs were trained on RGB. The thermal convention (as in T-CLIP) is
to copy the grey channel into R, G and B rather than to colourise it: the network then sees a
plain grey image, and no false colour structure is invented.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_rgb3(image: Any, *, channels_first: bool | None = None) -> Any:
    """Copy a single thermal channel into three identical channels.

    numpy: (H, W) or (H, W, 1) -> (H, W, 3); with ``channels_first=True``, (H, W) or (1, H, W)
        -> (3, H, W).
    torch: (1, H, W) -> (3, H, W) and (B, 1, H, W) -> (B, 3, H, W) (channels first, torch's
        convention; returned as a real copy, not a broadcast view).
    Dtype and values are unchanged. Input that already has 3 channels is returned as is.
    """
    if isinstance(image, np.ndarray):
        return _numpy_rgb3(image, bool(channels_first))
    if hasattr(image, "repeat") and hasattr(image, "dim"):  # a torch.Tensor, without importing torch
        if image.dim() not in (3, 4):
            raise ValueError(f"to_rgb3 needs a (1, H, W) or (B, 1, H, W) tensor, got shape {tuple(image.shape)}")
        c = image.shape[-3]
        if c == 3:
            return image
        if c != 1:
            raise ValueError(f"to_rgb3 needs one channel at dim -3, got shape {tuple(image.shape)}")
        reps = (3, 1, 1) if image.dim() == 3 else (1, 3, 1, 1)
        return image.repeat(*reps)
    raise TypeError(f"to_rgb3 needs a numpy array or torch tensor, got {type(image).__name__}")


def _numpy_rgb3(a: np.ndarray, channels_first: bool) -> np.ndarray:
    if channels_first:
        if a.ndim == 3 and a.shape[0] == 3:
            return a
        if a.ndim == 3 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 2:
            raise ValueError(f"to_rgb3(channels_first=True) needs (H, W) or (1, H, W), got shape {a.shape}")
        return np.repeat(a[None], 3, axis=0)
    if a.ndim == 3 and a.shape[-1] == 3:
        return a
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"to_rgb3 needs (H, W) or (H, W, 1), got shape {a.shape}")
    return np.repeat(a[..., None], 3, axis=-1)
