"""Physics-based synthetic thermal (LWIR) scenes: the offline default data, with exact ground truth.

Each scene is composed procedurally and rendered through a radiometric camera model:

1. Conditions (:mod:`.materials`): time of day, weather (clear / overcast / rain / fog / snow),
   ambient temperature, sun elevation and solar load, effective sky temperature, wetness,
   atmospheric extinction, and a UAV-like (nadir, oblique, 30-130 m) or low (4-25 m, 4-25 deg,
   horizon and sky in view) camera.
2. Layout (:mod:`.layout`): ground surfaces (asphalt roads with markings, concrete pavements,
   grass, soil, water, rubber tracks, snow), buildings with windows, trees; scene types road,
   parking, plaza, riverside, playground.
3. Objects (:mod:`.objects`): people, cars and bicycles (labels "Person", "Car", "Bicycle" as in
   HIT-UAV), 0-12 per scene, where they belong (cars in lanes or parking bays, people on walkable
   ground, often in groups), each made of parts with their own temperature and emissivity by
   state: car "running" | "just_parked" | "parked_cold", person "walking" | "standing" |
   "cycling", bicycle "ridden" | "parked"; surfaces "wet" | "dry".
4. Rendering (:mod:`.scene`, :mod:`.geometry`): pinhole projection over a flat ground, convex
   parts painted far to near at 2x supersampling, sun shadows on the ground, then per pixel
   ``L = tau * (eps * L(T) + (1 - eps) * L_refl) + (1 - tau) * L(T_a)`` with sky pixels
   ``L_sky(elevation)``.
5. Camera (:mod:`.radiometry`): Gaussian PSF, optional vignetting and fixed-pattern noise,
   temporal noise at the scene's NETD (30-80 mK), T-linear 16-bit counts
   ``T = 220 K + 0.002 K * count`` (one fixed window for every image).

Formulas and constants: :mod:`.radiometry` (Planck band radiance, sky, atmosphere, sensor) and
:mod:`.materials` (every temperature and emissivity range). The dataset folder format is in
:mod:`.dataset`.

Public API::

    render_scene(rng_or_seed, size=128, **fixed) -> (uint16 (size, size), ground-truth dict)
    generate(out, n, size=128, seed=0, splits=..., progress=True, workers=1, scene_options=None) -> Path
    load(root, split, report, skip_invalid=False) -> list[ThermalSample]
"""

from .dataset import CARD, DEFAULT_SPLITS, FORMAT, generate, load, split_counts
from .objects import LABELS
from .radiometry import CALIBRATION, KELVIN_OFFSET, KELVIN_PER_COUNT, band_radiance, counts_to_kelvin, radiance_temperature
from .scene import SceneRender, render_scene, render_scene_layers

__all__ = [
    "CALIBRATION",
    "CARD",
    "DEFAULT_SPLITS",
    "FORMAT",
    "KELVIN_OFFSET",
    "KELVIN_PER_COUNT",
    "LABELS",
    "SceneRender",
    "band_radiance",
    "counts_to_kelvin",
    "generate",
    "load",
    "radiance_temperature",
    "render_scene",
    "render_scene_layers",
    "split_counts",
]
