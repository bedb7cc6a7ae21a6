"""Pixel normalisation for thermal images: raw sensor values -> float32 in [0, 1], white-hot.

Three rules, chosen with ``norm=``:

``"fixed"`` (the models' default)
    Divide by the full range of the storage type: 255 for 8-bit, 65535 for 16-bit (or
    ``2**bit_depth - 1`` when the sensor fills fewer bits, e.g. 14-bit counts in a 16-bit PNG).
    The same count always maps to the same value, so absolute levels survive: a cold night scene
    stays darker than a warm day scene, which a per-image stretch would erase.
``"percentile"``
    Per-image stretch between two percentiles (default 1 and 99), clipped to [0, 1]. Best for
    viewing low-contrast 16-bit data; destroys absolute level, so not for training by default.
``"temperature"``
    Map a temperature window ``temperature_range_k = (t_min, t_max)`` in kelvin to [0, 1], clipped.
    Needs radiometric data: integer counts plus a calibration
    ``{"kelvin_per_count": g, "kelvin_offset": o}`` (T = o + g * count, the
    :class:`~thermgen.data.sample.ThermalSample` convention), or a float array already in kelvin.
``"none"``
    The raw values as float32 (counts, or kelvin for float input); no scaling.

Polarity: everything here returns white-hot (bright = hot). Black-hot data is flipped on read
(``read_thermal(..., polarity="black-hot")``) or with :func:`flip_polarity`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

NORMS = ("fixed", "percentile", "temperature", "none")

# -40 degC .. +70 degC: covers a clear night sky's near-horizon radiance temperature up to sunlit
# asphalt and running engines, so one fixed window serves most outdoor scenes.
DEFAULT_TEMPERATURE_RANGE_K = (233.15, 343.15)
DEFAULT_PERCENTILES = (1.0, 99.0)


def full_range(dtype: np.dtype | type, bit_depth: int | None = None) -> tuple[float, float]:
    """The (lo, hi) value range of an integer storage type, or of ``bit_depth`` unsigned bits."""
    if bit_depth is not None:
        if not (1 <= int(bit_depth) <= 32):
            raise ValueError(f"bit_depth must be in 1..32, got {bit_depth!r}")
        return 0.0, float(2 ** int(bit_depth) - 1)
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        raise ValueError(f"dtype {dtype} has no full range (only integer data does)")
    info = np.iinfo(dtype)
    return float(info.min), float(info.max)


def counts_to_kelvin(counts: np.ndarray, radiometric: Mapping[str, float]) -> np.ndarray:
    """Radiometric counts -> temperature in kelvin, float32, same shape.

    ``radiometric`` holds ``kelvin_per_count`` (gain, K per count) and ``kelvin_offset`` (K):
    T = kelvin_offset + kelvin_per_count * count.
    """
    try:
        gain = float(radiometric["kelvin_per_count"])
        offset = float(radiometric["kelvin_offset"])
    except KeyError as e:
        raise ValueError(f"radiometric calibration lacks key {e.args[0]!r}; need 'kelvin_per_count' and 'kelvin_offset'") from None
    except (TypeError, ValueError):
        raise ValueError(f"radiometric calibration values must be numbers, got {dict(radiometric)!r}") from None
    if not np.isfinite(gain) or gain <= 0 or not np.isfinite(offset):
        raise ValueError(f"radiometric calibration needs a finite positive kelvin_per_count and finite offset, got {dict(radiometric)!r}")
    return (offset + gain * np.asarray(counts, dtype=np.float64)).astype(np.float32)


def percentile_stretch(arr: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Stretch ``arr`` so that its ``percentiles[0]`` maps to 0 and ``percentiles[1]`` to 1, clipped.

    A flat image (both percentiles equal) has no contrast to stretch and maps to all zeros.
    Returns float32 of the same shape.
    """
    lo_p, hi_p = (float(p) for p in percentiles)
    if not (0.0 <= lo_p < hi_p <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {percentiles!r}")
    a = np.asarray(arr, dtype=np.float64)
    lo, hi = np.percentile(a, [lo_p, hi_p])
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def flip_polarity(arr: np.ndarray) -> np.ndarray:
    """Swap white-hot and black-hot.

    float arrays are taken to be in [0, 1] (returns ``1 - arr``); integer arrays use the full range
    of their type (``255 - arr`` for uint8, ``65535 - arr`` for uint16). Same dtype and shape.
    """
    a = np.asarray(arr)
    if a.dtype.kind == "f":
        return (1.0 - a).astype(a.dtype, copy=False)
    if a.dtype.kind in "ui":
        lo, hi = full_range(a.dtype)
        # lo + hi - a stays inside the type for signed and unsigned alike.
        return (int(lo) + int(hi) - a.astype(np.int64)).astype(a.dtype)
    raise ValueError(f"cannot flip polarity of a {a.dtype} array")


def normalize(
    arr: np.ndarray,
    norm: str = "fixed",
    *,
    bit_depth: int | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    radiometric: Mapping[str, float] | None = None,
    temperature_range_k: tuple[float, float] = DEFAULT_TEMPERATURE_RANGE_K,
    where: str = "array",
) -> np.ndarray:
    """Map raw thermal values to float32 (same shape), by the rule ``norm`` (see the module docstring).

    arr: integer counts (uint8, uint16, ...) or float values. Float input is taken to be already in
        [0, 1] for ``"fixed"`` and to be kelvin for ``"temperature"`` (unless ``radiometric`` is given).
    bit_depth: the sensor's bit depth when it does not fill the storage type ("fixed" only).
    percentiles: (lo, hi) in percent ("percentile" only).
    radiometric: ``{"kelvin_per_count", "kelvin_offset"}`` ("temperature" with integer counts).
    temperature_range_k: (t_min, t_max) in kelvin mapped to (0, 1) ("temperature" only).
    where: names the data in error messages (e.g. the file path).

    Raises ValueError (a :class:`~thermgen.data.sample.DataError` for data problems) naming ``where``.
    """
    from thermgen.data.sample import DataError

    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    a = np.asarray(arr)
    if a.dtype.kind not in "uif":
        raise DataError(f"{where}: cannot normalise {a.dtype} data (need integer counts or float values)")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataError(f"{where}: contains NaN or infinite values")

    if norm == "none":
        return a.astype(np.float32)

    if norm == "percentile":
        return percentile_stretch(a, percentiles)

    if norm == "fixed":
        if a.dtype.kind == "f":
            lo, hi = float(a.min()), float(a.max())
            # float data has no storage range; accept it only if it is already a [0, 1] image.
            if lo < 0.0 or hi > 1.0:
                raise DataError(
                    f"{where}: float data spans [{lo:g}, {hi:g}], outside [0, 1], so 'fixed' normalisation has no "
                    "range to use; pass norm='percentile', or norm='temperature' for kelvin values"
                )
            return a.astype(np.float32)
        lo, hi = full_range(a.dtype, bit_depth)
        if bit_depth is not None and a.size and (a.min() < lo or a.max() > hi):
            raise DataError(f"{where}: values span [{a.min()}, {a.max()}], outside the {bit_depth}-bit range [0, {int(hi)}]")
        return ((a.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)

    # norm == "temperature"
    t_min, t_max = (float(t) for t in temperature_range_k)
    if not (np.isfinite(t_min) and np.isfinite(t_max) and 0.0 <= t_min < t_max):
        raise ValueError(f"temperature_range_k must be (t_min, t_max) kelvin with 0 <= t_min < t_max, got {temperature_range_k!r}")
    if radiometric is not None:
        kelvin = counts_to_kelvin(a, radiometric)
    elif a.dtype.kind == "f":
        kelvin = a.astype(np.float32)
    else:
        raise DataError(
            f"{where}: norm='temperature' needs radiometric data: integer counts need a calibration "
            "radiometric={'kelvin_per_count': ..., 'kelvin_offset': ...} (8-bit AGC images are not radiometric)"
        )
    return np.clip((kelvin.astype(np.float64) - t_min) / (t_max - t_min), 0.0, 1.0).astype(np.float32)

