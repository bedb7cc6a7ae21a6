"""Diffusers pipelines of thermgen: text-to-thermal latent diffusion conditioned on T-CLIP.

``from pipelines import ThermalDiffusionPipeline``; importing this package also lets the generic
``diffusers.DiffusionPipeline.from_pretrained(folder)`` load a saved thermal pipeline folder.
"""

# diffusers resolves a saved component by its module name: make the T-CLIP text encoder importable by it.
import tclip.text_encoder  # noqa: F401

from .colormaps import THERMAL_COLORMAPS, apply_colormap, colormap_lut
from .patch_autoencoder import PatchAutoencoder, load_thermal_vae
from .pipeline_thermal_diffusion import (
    ThermalDiffusionPipeline,
    ThermalDiffusionPipelineOutput,
    decode_thermal,
    encode_thermal,
)

__all__ = [
    "PatchAutoencoder",
    "THERMAL_COLORMAPS",
    "ThermalDiffusionPipeline",
    "ThermalDiffusionPipelineOutput",
    "apply_colormap",
    "colormap_lut",
    "decode_thermal",
    "encode_thermal",
    "load_thermal_vae",
]
