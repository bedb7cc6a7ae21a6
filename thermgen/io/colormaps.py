"""Colormaps for viewing thermal images: grey (white-hot, black-hot), ironbow, perceptual maps.

Colormaps are for people, never for models: models get the grey image (replicated with
:func:`thermgen.io.to_rgb3` when they want three channels).

``white-hot``  grey, bright = hot (the usual thermal camera default; the models' polarity)
``black-hot``  grey, dark = hot
``ironbow``    the "iron" palette of thermography: black -> indigo -> magenta -> red -> orange ->
               yellow -> white. Defined below by control points, linearly interpolated; its
               luminance rises monotonically, so hotter always reads brighter.
``inferno``, ``magma``, ``plasma``, ``viridis``, ``cividis``
               matplotlib's perceptually uniform maps (equal steps in value look equal).
Any other matplotlib colormap name is accepted as well.

Every map is a 256-entry lookup table: value v in [0, 1] picks entry ``round(v * 255)``.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .normalize import full_range

# (position, (R, G, B)) control points of the ironbow palette, 8-bit sRGB.
IRONBOW_POINTS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.00, (0, 0, 0)),
    (0.15, (32, 0, 96)),
    (0.30, (112, 0, 160)),
    (0.45, (190, 30, 130)),
    (0.60, (230, 80, 40)),
    (0.75, (250, 150, 0)),
    (0.90, (255, 220, 40)),
    (1.00, (255, 255, 255)),
)

_ALIASES = {
    "white-hot": "white-hot",
    "whitehot": "white-hot",
    "white_hot": "white-hot",
    "grey": "white-hot",
    "gray": "white-hot",
    "black-hot": "black-hot",
    "blackhot": "black-hot",
    "black_hot": "black-hot",
    "ironbow": "ironbow",
    "iron": "ironbow",
}
PERCEPTUAL = ("inferno", "magma", "plasma", "viridis", "cividis")
COLORMAPS = ("white-hot", "black-hot", "ironbow", *PERCEPTUAL)


def colormap_lut(name: str) -> np.ndarray:
    """The lookup table of colormap ``name``: uint8 array (256, 3), read-only."""
    return _lut(_canonical(name))


def apply_colormap(
    arr: np.ndarray,
    name: str = "ironbow",
    *,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Render a single-channel thermal image in colour for viewing.

    arr: (H, W) white-hot values. Float input is read on [vmin, vmax] (default [0, 1], e.g. the
        output of ``read_thermal``); integer input on its type's full range (0..255, 0..65535)
        unless vmin/vmax are given. Values outside the window are clipped.
    name: one of ``COLORMAPS`` (or an alias: "grey", "iron", ...) or any matplotlib colormap.

    Returns uint8 RGB of shape (H, W, 3).
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"apply_colormap needs a single-channel (H, W) image, got shape {a.shape}")
    if a.dtype.kind not in "uifb":
        raise ValueError(f"apply_colormap cannot use {a.dtype} data")
    lut = colormap_lut(name)
    if vmin is None or vmax is None:
        lo, hi = full_range(a.dtype) if a.dtype.kind in "ui" else (0.0, 1.0)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    if not float(vmax) > float(vmin):
        raise ValueError(f"apply_colormap needs vmax > vmin, got vmin={vmin}, vmax={vmax}")
    x = (a.astype(np.float64) - float(vmin)) / (float(vmax) - float(vmin))
    x = np.nan_to_num(x, nan=0.0)
    idx = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.intp)
    return lut[idx]


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"colormap name must be a string, got {name!r}")
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key in PERCEPTUAL:
        return key
    import matplotlib

    if name in matplotlib.colormaps:
        return name
    raise ValueError(f"unknown colormap {name!r}; use one of {', '.join(COLORMAPS)} or a matplotlib colormap name")


@cache
def _lut(name: str) -> np.ndarray:
    v = np.linspace(0.0, 1.0, 256)
    if name == "white-hot":
        grey = np.arange(256, dtype=np.uint8)
        lut = np.stack([grey, grey, grey], axis=-1)
    elif name == "black-hot":
        grey = np.arange(255, -1, -1, dtype=np.uint8)
        lut = np.stack([grey, grey, grey], axis=-1)
    elif name == "ironbow":
        pos = np.array([p for p, _ in IRONBOW_POINTS])
        rgb = np.array([c for _, c in IRONBOW_POINTS], dtype=np.float64)
        lut = np.stack([np.interp(v, pos, rgb[:, k]) for k in range(3)], axis=-1)
        lut = np.rint(lut).astype(np.uint8)
    else:
        import matplotlib

        lut = np.rint(matplotlib.colormaps[name](v)[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut
