"""T-CLIP: thermal CLIP with two LoRA adapters ("global", "fine") on one frozen open_clip base.

Usable alone (it never imports thermgen or pipelines)::

    import tclip
    model = tclip.load("runs/x/tclip")
    img = model.encode_image(images)                       # (B, 1, H, W) in [0, 1] -> (B, D), dual
    txt = model.encode_text(global_caps, fine_caps)        # (B, D), dual

Commands: `python -m tclip.train`, `python -m tclip.eval`, `python -m tclip.bench_hituav`.
"""

from .data import load_thermal_image, read_manifest
from .model import TCLIP, build_base, fuse, list_configs, load, parse_base_spec

__version__ = "0.1.0"

__all__ = [
    "TCLIP",
    "load",
    "build_base",
    "parse_base_spec",
    "fuse",
    "list_configs",
    "load_thermal_image",
    "read_manifest",
]
