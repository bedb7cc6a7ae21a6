"""Colormaps for viewing single-channel thermal images (white-hot input: bright = hot).

The pipeline renders its output through these lookup tables when asked (``colormap=...``). They live
here, not in ``thermgen.io``, because imports point one way (thermgen -> pipelines -> tclip) and the
pipeline must stay usable without the toolkit around it.

Names: ``"white-hot"`` (grey, bright = hot), ``"black-hot"`` (grey, inverted), ``"ironbow"`` (the
black-purple-red-yellow-white palette of thermal cameras), and any matplotlib colormap name
(``"inferno"``, ``"magma"``, ``"viridis"``, ...). A callable mapping float ``(H, W)`` in [0, 1] to
uint8 ``(H, W, 3)`` is accepted wherever a name is.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

Colormap = str | Callable[[np.ndarray], np.ndarray]

# Ironbow control points (position in [0, 1], 8-bit RGB), linearly interpolated; luminance rises
# monotonically so hotter reads brighter. Kept identical to thermgen.io's palette (a test checks),
# so images from the pipeline and from the toolkit's viewers look the same.
_IRONBOW = (
    (0.00, (0, 0, 0)),
    (0.15, (32, 0, 96)),
    (0.30, (112, 0, 160)),
    (0.45, (190, 30, 130)),
    (0.60, (230, 80, 40)),
    (0.75, (250, 150, 0)),
    (0.90, (255, 220, 40)),
    (1.00, (255, 255, 255)),
)

THERMAL_COLORMAPS = ("white-hot", "black-hot", "ironbow")


@lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """The 256-entry lookup table of a named colormap: uint8 array (256, 3).

    Raises ``ValueError`` naming the colormap when it is unknown.
    """
    ramp = np.arange(256, dtype=np.float64)
    if name == "white-hot":
        lut = np.repeat(ramp[:, None], 3, axis=1)
    elif name == "black-hot":
        lut = np.repeat(ramp[::-1, None], 3, axis=1)
    elif name == "ironbow":
        pos = np.array([p for p, _ in _IRONBOW]) * 255.0
        rgb = np.array([c for _, c in _IRONBOW], dtype=np.float64)
        lut = np.stack([np.interp(ramp, pos, rgb[:, k]) for k in range(3)], axis=1)
    else:
        import matplotlib

        try:
            cmap = matplotlib.colormaps[name]
        except KeyError:
            raise ValueError(
                f"`colormap` must be one of {list(THERMAL_COLORMAPS)} or a matplotlib colormap name "
                f"(e.g. 'inferno'), got {name!r}"
            ) from None
        lut = cmap(ramp / 255.0)[:, :3] * 255.0
    out = np.clip(np.round(lut), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


def check_colormap(colormap: Colormap | None) -> None:
    """Raise ``ValueError`` naming ``colormap`` unless it is None, a known name or a callable."""
    if colormap is None or callable(colormap):
        return
    if not isinstance(colormap, str):
        raise ValueError(f"`colormap` must be a name or a callable, got {type(colormap).__name__}: {colormap!r}")
    colormap_lut(colormap)


def apply_colormap(images: np.ndarray, colormap: Colormap) -> np.ndarray:
    """Render thermal images through a colormap.

    Args:
        images: float array (..., H, W) in [0, 1], white-hot (values outside are clipped).
        colormap: a name (see the module docstring) or a callable float (H, W) -> uint8 (H, W, 3).

    Returns:
        uint8 array (..., H, W, 3).
    """
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if callable(colormap):
        flat = images.reshape(-1, *images.shape[-2:])
        out = np.stack([np.asarray(colormap(im), dtype=np.uint8) for im in flat])
        if out.shape[1:] != (*images.shape[-2:], 3):
            raise ValueError(f"`colormap` callable must return uint8 (H, W, 3), got shape {out.shape[1:]}")
        return out.reshape(*images.shape, 3)
    idx = np.round(images * 255.0).astype(np.intp)
    return colormap_lut(colormap)[idx]
