"""Write thermal images as 8-bit or 16-bit PNG, losslessly.

PNG is lossless at both depths; :func:`write_png16` keeps every one of the 65536 count levels, so
radiometric data survives a write/read round trip bit for bit. Float input in [0, 1] is quantised
by rounding (``round(x * 255)`` or ``round(x * 65535)``), the inverse of the "fixed" read rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_png8", "write_png16", "to_uint"]


def to_uint(arr: np.ndarray, dtype: type = np.uint16, *, what: str = "image") -> np.ndarray:
    """Convert to ``dtype`` (uint8 or uint16) without silent wrap-around.

    Integer input must already lie in the type's range; float input must lie in [0, 1] and is
    scaled to the full range with rounding. NaN/inf and out-of-range values raise ValueError.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ValueError(f"dtype must be uint8 or uint16, got {dtype}")
    hi = np.iinfo(dtype).max
    a = np.asarray(arr)
    if a.dtype == dtype:
        return a
    if a.dtype.kind in "ui":
        if a.size and (int(a.min()) < 0 or int(a.max()) > hi):
            raise ValueError(f"{what}: integer values span [{a.min()}, {a.max()}], outside {dtype} range [0, {hi}]")
        return a.astype(dtype)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: contains NaN or infinite values")
        if a.size and (float(a.min()) < 0.0 or float(a.max()) > 1.0):
            raise ValueError(f"{what}: float values span [{a.min():g}, {a.max():g}]; float input must be in [0, 1]")
        return np.rint(a.astype(np.float64) * hi).astype(dtype)
    raise ValueError(f"{what}: cannot write {a.dtype} data")


def write_png16(path: str | Path, arr: np.ndarray) -> Path:
    """Write a single-channel 16-bit PNG, losslessly.

    arr: (H, W) uint16 counts (or any integer array within 0..65535, or float in [0, 1]).
    Creates parent folders. Returns the path written.
    """
    a = _check_2d(np.asarray(arr), path)
    a = to_uint(a, np.uint16, what=str(path))
    # Pillow's "I;16" is little-endian; force the byte order so big-endian input is not mangled.
    im = Image.fromarray(np.ascontiguousarray(a.astype("<u2")))
    return _save_png(im, path)


def write_png8(path: str | Path, arr: np.ndarray) -> Path:
    """Write an 8-bit PNG: grey (H, W) or RGB (H, W, 3), e.g. the output of ``apply_colormap``.

    arr: uint8, integers within 0..255, or float in [0, 1]. Creates parent folders.
    Returns the path written.
    """
    a = np.asarray(arr)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise ValueError(f"{path}: need an (H, W) or (H, W, 3) array, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{path}: cannot write an empty image of shape {a.shape}")
    a = to_uint(a, np.uint8, what=str(path))
    return _save_png(Image.fromarray(np.ascontiguousarray(a)), path)


def _check_2d(a: np.ndarray, path: str | Path) -> np.ndarray:
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{path}: need a single-channel (H, W) array, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{path}: cannot write an empty image of shape {a.shape}")
    return a


def _save_png(im: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # compress_level 6 is PNG's usual speed/size balance; PNG is lossless at any level.
    im.save(path, format="PNG", compress_level=6)
    return path
