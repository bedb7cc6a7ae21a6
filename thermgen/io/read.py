"""Read thermal images (8/16-bit PNG, TIFF, JPEG, ``.npy``) into single-channel arrays.

:func:`read_raw` returns the stored values untouched (uint8, uint16, float32 ...; shape (H, W));
:func:`read_thermal` adds normalisation to float32 in [0, 1], white-hot (see
:mod:`thermgen.io.normalize` for the rules). :func:`image_size` reads only the header.

Colour handling: thermal cameras and datasets often store a grey frame in an RGB file (LLVIP's
infrared JPEGs do). An RGB image whose three channels agree (to within ``grey_tolerance`` levels,
which absorbs JPEG rounding) is accepted as grey. Anything else is true colour, e.g. a visible
frame or a palette-rendered (ironbow) export, and is an error unless ``color="luma"`` asks for a
BT.601 luma conversion (which is *not* temperature-monotonic for palette renders).

Every failure is a :class:`~thermgen.data.sample.DataError` whose message starts with the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from thermgen.data.sample import DataError

from .normalize import DEFAULT_PERCENTILES, DEFAULT_TEMPERATURE_RANGE_K, flip_polarity, full_range, normalize

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
POLARITIES = ("white-hot", "black-hot")
COLOR_MODES = ("error", "luma")

# Default tolerance for "equal channels", in 8-bit levels (scaled to the type for 16-bit data).
# Lossless grey-in-RGB files agree exactly; JPEG round trips of a grey frame agree to +-1.
DEFAULT_GREY_TOLERANCE = 2

_LUMA_BT601 = np.array([0.299, 0.587, 0.114])


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels from the file header, without decoding the pixels."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".npy":
        arr = _load_npy(path, mmap=True)
        h, w = _npy_hw(arr, path)
        return w, h
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def read_raw(
    path_or_array: str | Path | np.ndarray,
    *,
    color: str = "error",
    grey_tolerance: int = DEFAULT_GREY_TOLERANCE,
) -> np.ndarray:
    """Stored pixel values of a single-channel thermal image, shape (H, W), dtype as stored.

    8-bit files give uint8, 16-bit PNG/TIFF give uint16 (native byte order), float TIFF and float
    ``.npy`` give float32/float64. Equal-channel RGB is returned as its grey channel; see the module
    docstring for ``color`` and ``grey_tolerance``. Multi-page TIFFs give their first page.
    """
    if color not in COLOR_MODES:
        raise ValueError(f"color must be one of {COLOR_MODES}, got {color!r}")
    if isinstance(path_or_array, np.ndarray):
        return _to_single_channel(path_or_array, "array", color, grey_tolerance)

    path = Path(path_or_array)
    _check_file(path)
    if path.suffix.lower() == ".npy":
        arr = _load_npy(path, mmap=False)
        _npy_hw(arr, path)
        return _to_single_channel(np.asarray(arr), str(path), color, grey_tolerance)

    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, inside the try
            fmt = im.format
            arr = _pil_to_array(im, fmt)
    except UnidentifiedImageError as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        # PIL reports truncated/corrupt data as OSError ("image file is truncated"), some
        # plugins as SyntaxError/ValueError.
        raise DataError(f"{path}: truncated or corrupt image ({e})") from None
    if arr.size == 0:
        raise DataError(f"{path}: image has no pixels (shape {arr.shape})")
    return _to_single_channel(arr, str(path), color, grey_tolerance)


def read_thermal(
    path_or_array: str | Path | np.ndarray,
    norm: str = "fixed",
    *,
    polarity: str = "white-hot",
    bit_depth: int | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    radiometric: Mapping[str, float] | None = None,
    temperature_range_k: tuple[float, float] = DEFAULT_TEMPERATURE_RANGE_K,
    color: str = "error",
    grey_tolerance: int = DEFAULT_GREY_TOLERANCE,
) -> np.ndarray:
    """Read a thermal image as float32 (H, W), white-hot, normalised by ``norm``.

    path_or_array: an image file (PNG, TIFF, JPEG, BMP, ``.npy``) or an array of raw values.
    norm: ``"fixed"`` (default: value / full range of the stored type, so 8-bit /255, 16-bit /65535),
        ``"percentile"`` (per-image stretch), ``"temperature"`` (kelvin window; needs ``radiometric``
        or float kelvin data), or ``"none"`` (raw values as float32).
    polarity: how the *file* is stored. ``"black-hot"`` data is flipped so the result is white-hot.
    bit_depth, percentiles, radiometric, temperature_range_k: see :func:`thermgen.io.normalize`.
    color, grey_tolerance: colour handling, see the module docstring.

    Raises :class:`~thermgen.data.sample.DataError` naming the file for unreadable, truncated, empty
    or true-colour input.
    """
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    where = "array" if isinstance(path_or_array, np.ndarray) else str(path_or_array)
    raw = read_raw(path_or_array, color=color, grey_tolerance=grey_tolerance)
    if polarity == "black-hot":
        raw = _flip_raw(raw, bit_depth, where)
    return normalize(
        raw,
        norm,
        bit_depth=bit_depth,
        percentiles=percentiles,
        radiometric=radiometric,
        temperature_range_k=temperature_range_k,
        where=where,
    )


# ---------------------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None


def _npy_hw(arr: np.ndarray, path: Path) -> tuple[int, int]:
    shape = arr.shape
    if arr.ndim == 2 or (arr.ndim == 3 and shape[-1] in (1, 3, 4)):
        h, w = shape[:2]
    elif arr.ndim == 3 and shape[0] == 1:
        h, w = shape[1:]
    else:
        raise DataError(f"{path}: array of shape {shape} is not an image (need (H, W), (H, W, 1|3|4) or (1, H, W))")
    if h == 0 or w == 0:
        raise DataError(f"{path}: image has no pixels (shape {shape})")
    return int(h), int(w)


def _pil_to_array(im: Image.Image, fmt: str | None) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)  # to native byte order
    if mode == "I":
        arr = np.asarray(im)
        # Older Pillow opens 16-bit greyscale PNGs as 32-bit "I"; PNG holds at most 16 bits.
        if fmt == "PNG" and (arr.size == 0 or (arr.min() >= 0 and arr.max() <= 65535)):
            return arr.astype(np.uint16)
        return arr
    if mode in ("L", "F"):
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("LA", "La"):
        return np.asarray(im)[..., 0]
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        return np.asarray(im)[..., :3]
    # Palette, CMYK, YCbCr, ...: go through RGB, then the grey test decides.
    return np.asarray(im.convert("RGB"))


def _to_single_channel(arr: np.ndarray, where: str, color: str, grey_tolerance: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "uif":
        raise DataError(f"{where}: unsupported pixel type {arr.dtype}")
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # alpha carries no thermal information
    if arr.ndim == 2:
        if arr.size == 0:
            raise DataError(f"{where}: image has no pixels (shape {arr.shape})")
        return arr
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise DataError(f"{where}: array of shape {arr.shape} is not an image (need (H, W) or (H, W, 3))")
    if arr.size == 0:
        raise DataError(f"{where}: image has no pixels (shape {arr.shape})")

    wide = arr.astype(np.float64)
    spread = float(np.max(np.abs(wide - wide[..., :1])))  # max |R-G|, |R-B| over the image
    tol = float(grey_tolerance)
    if arr.dtype == np.uint16:
        tol *= 257.0  # the same tolerance in 16-bit levels
    elif arr.dtype.kind == "f":
        tol /= 255.0
    if spread <= tol:
        grey = wide.mean(axis=-1) if spread > 0 else wide[..., 0]
        return _cast_like(grey, arr.dtype)
    if color == "luma":
        return _cast_like(wide @ _LUMA_BT601, arr.dtype)
    raise DataError(
        f"{where}: true colour image (channels differ by up to {spread:g} levels); thermal images must be grey. "
        "Pass color='luma' to convert anyway (palette-rendered thermal does not convert back to temperature)"
    )


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype).kind in "ui":
        lo, hi = full_range(dtype)
        return np.clip(np.rint(values), lo, hi).astype(dtype)
    return values.astype(dtype)


def _flip_raw(raw: np.ndarray, bit_depth: int | None, where: str) -> np.ndarray:
    if raw.dtype.kind in "ui":
        if bit_depth is None:
            return flip_polarity(raw)
        _, hi = full_range(raw.dtype, bit_depth)
        if raw.min() < 0 or raw.max() > hi:
            raise DataError(f"{where}: values span [{raw.min()}, {raw.max()}], outside the {bit_depth}-bit range [0, {int(hi)}]")
        return (int(hi) - raw.astype(np.int64)).astype(raw.dtype)
    lo, hi = float(raw.min()), float(raw.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"{where}: cannot flip polarity of float data spanning [{lo:g}, {hi:g}] (no known range; need [0, 1])")
    return flip_polarity(raw)
