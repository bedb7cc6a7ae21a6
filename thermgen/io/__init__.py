"""Thermal image I/O: read any common thermal file into float32 (H, W) white-hot, write lossless
8/16-bit PNG, normalise, flip polarity, colourise for viewing, replicate to 3 channels.

>>> from thermgen.io import read_thermal, write_png16, apply_colormap
>>> img = read_thermal("frame.png")               # float32 (H, W) in [0, 1], "fixed" normalisation
>>> view = apply_colormap(img, "ironbow")         # uint8 (H, W, 3) for people
"""

from .channels import to_rgb3
from .colormaps import COLORMAPS, IRONBOW_POINTS, apply_colormap, colormap_lut
from .normalize import (
    DEFAULT_PERCENTILES,
    DEFAULT_TEMPERATURE_RANGE_K,
    NORMS,
    counts_to_kelvin,
    flip_polarity,
    full_range,
    normalize,
    percentile_stretch,
)
from .read import IMAGE_EXTENSIONS, image_size, read_raw, read_thermal
from .write import to_uint, write_png8, write_png16

__all__ = [
    "COLORMAPS",
    "DEFAULT_PERCENTILES",
    "DEFAULT_TEMPERATURE_RANGE_K",
    "IMAGE_EXTENSIONS",
    "IRONBOW_POINTS",
    "NORMS",
    "apply_colormap",
    "colormap_lut",
    "counts_to_kelvin",
    "flip_polarity",
    "full_range",
    "image_size",
    "normalize",
    "percentile_stretch",
    "read_raw",
    "read_thermal",
    "to_rgb3",
    "to_uint",
    "write_png16",
    "write_png8",
]
