"""Radiometry of the synthetic scenes: LWIR band radiance, sky, atmosphere and the camera model.

All radiances are band-integrated over the 8-14 um LWIR window, in W m^-2 sr^-1.

Band radiance of a blackbody at temperature T (kelvin)::

    L(T) = integral_{8um}^{14um} 2 h c^2 / lambda^5 / (exp(h c / (lambda k T)) - 1) d lambda

with h = 6.62607015e-34 J s, c = 2.99792458e8 m/s, k = 1.380649e-23 J/K. It is tabulated once
(trapezoid rule, 601 wavelengths; T from 150 K to 450 K every 0.05 K) and read by linear
interpolation both ways: ``band_radiance(T)`` and its inverse ``radiance_temperature(L)`` (the
"apparent" or radiance temperature a perfect blackbody would need to emit L). L(300 K) is about
55 W m^-2 sr^-1, 37.6 % of the total sigma T^4 / pi (the tests check the integral against the
Stefan-Boltzmann law and the table against direct integration).

Sky (only visible in low oblique views; also the source of reflected radiance). Effective zenith
sky temperature T_z is drawn below ambient T_a (clear: 25-45 K below, cloud/fog/rain: 0-10 K).
Zenith sky emissivity eps_z = L(T_z) / L(T_a); at elevation angle e the sky is a longer, warmer
atmospheric path. The grey Beer-Lambert law ``1 - (1 - eps_z) ** (1 / sin e)`` makes the
8-14 um sky reach ambient within a few degrees of the horizon, because the window is not grey
(its transparent part saturates slowly); we use the square root of the air mass instead::

    eps_sky(e) = 1 - (1 - eps_z) ** sqrt(1 / sin e),    L_sky(e) = eps_sky(e) * L(T_a)

(clear sky 35 K below ambient at the zenith is then about 8 K below at 10 deg elevation).

Downwelling radiance on a horizontal surface (cosine-weighted hemisphere average)::

    L_down = 2 * integral_0^{pi/2} L_sky(e) sin e cos e de

Vertical surfaces see half sky, half ground: L_refl = (L_down + L(T_a)) / 2.

Surface radiance leaving a surface of emissivity eps at temperature T (opaque, Kirchhoff,
diffuse reflection)::

    L_surf = eps * L(T) + (1 - eps) * L_refl

Atmosphere between the surface and the camera, path length r (metres), extinction beta (1/m)::

    tau = exp(-beta * r),     L_sensor = tau * L_surf + (1 - tau) * L(T_a)

beta per weather, drawn per scene (per km): clear 0.05-0.2, overcast 0.1-0.4, rain 0.5-2.5,
snow 1-4, fog 4-15.

Camera (``Camera`` below): optics blur with a Gaussian PSF of sigma ``psf_sigma_px`` (output
pixels) applied to radiance, optional vignetting ``L *= 1 - v * rho^2`` (rho: distance from the
image centre over the half diagonal), fixed-pattern non-uniformity (per-column and per-pixel
offsets, ``fpn_sigma_k`` in NETD-equivalent kelvin) and temporal noise: Gaussian in radiance with
sigma = NETD * dL/dT(300 K), so colder scenes show more kelvin of noise, as real microbolometers do.
The sensor then reports T-linear counts (as radiometric cores such as FLIR's "TLinear" mode do)::

    count = round((T_app - KELVIN_OFFSET) / KELVIN_PER_COUNT),  clipped to 0..65535
    KELVIN_OFFSET = 220 K, KELVIN_PER_COUNT = 0.002 K  ->  a fixed 220.00-351.07 K window

so ``T = 220 + 0.002 * count`` exactly (up to the 1 mK quantisation), and the same count means the
same temperature in every image: a night scene is darker than a day scene under "fixed"
normalisation.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

H_PLANCK = 6.62607015e-34
C_LIGHT = 2.99792458e8
K_BOLTZMANN = 1.380649e-23
BAND_UM = (8.0, 14.0)

KELVIN_OFFSET = 220.0
KELVIN_PER_COUNT = 0.002
MAX_COUNT = 65535
CALIBRATION = {"kelvin_per_count": KELVIN_PER_COUNT, "kelvin_offset": KELVIN_OFFSET}

_T_MIN, _T_MAX, _T_STEP = 150.0, 450.0, 0.05
NETD_REFERENCE_K = 300.0


def planck_band_radiance(temperature_k: np.ndarray, band_um: tuple[float, float] = BAND_UM, n_wavelengths: int = 601) -> np.ndarray:
    """Direct numerical band integral of Planck's law, W m^-2 sr^-1 (slow; the table uses it)."""
    t = np.atleast_1d(np.asarray(temperature_k, dtype=np.float64))
    lam = np.linspace(band_um[0], band_um[1], n_wavelengths) * 1e-6
    c1 = 2.0 * H_PLANCK * C_LIGHT**2
    c2 = H_PLANCK * C_LIGHT / K_BOLTZMANN
    spectral = c1 / lam[None, :] ** 5 / np.expm1(c2 / (lam[None, :] * t[:, None]))
    return np.trapezoid(spectral, lam, axis=1)


@functools.cache
def _table() -> tuple[np.ndarray, np.ndarray]:
    temps = np.arange(_T_MIN, _T_MAX + _T_STEP / 2, _T_STEP)
    return temps, planck_band_radiance(temps)


def band_radiance(temperature_k: np.ndarray | float) -> np.ndarray:
    """LWIR (8-14 um) band radiance of a blackbody, W m^-2 sr^-1; same shape as the input."""
    temps, rad = _table()
    return np.interp(temperature_k, temps, rad)


def radiance_temperature(radiance: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`band_radiance`: the blackbody temperature (K) emitting ``radiance``."""
    temps, rad = _table()
    return np.interp(radiance, rad, temps)


def radiance_slope(temperature_k: float) -> float:
    """dL/dT of the band radiance at ``temperature_k``, W m^-2 sr^-1 K^-1."""
    return float((band_radiance(temperature_k + 0.05) - band_radiance(temperature_k - 0.05)) / 0.1)


def sky_radiance(elevation_rad: np.ndarray, ambient_k: float, zenith_k: float) -> np.ndarray:
    """Sky radiance at elevation angle(s) ``elevation_rad`` (radians, > 0), W m^-2 sr^-1."""
    l_amb = float(band_radiance(ambient_k))
    eps_z = float(band_radiance(zenith_k)) / l_amb
    s = np.clip(np.sin(elevation_rad), 1e-3, 1.0)
    return (1.0 - (1.0 - eps_z) ** np.sqrt(1.0 / s)) * l_amb


def downwelling_radiance(ambient_k: float, zenith_k: float, n: int = 90) -> float:
    """Cosine-weighted hemispherical sky radiance on a horizontal surface, W m^-2 sr^-1."""
    e = (np.arange(n) + 0.5) * (np.pi / 2) / n
    return float(np.sum(sky_radiance(e, ambient_k, zenith_k) * 2.0 * np.sin(e) * np.cos(e)) * (np.pi / 2) / n)


@dataclass
class Camera:
    """The sensor and optics. Units: kelvin, output pixels.

    netd_k: temporal noise-equivalent temperature difference at 300 K.
    psf_sigma_px: Gaussian optics blur, in output pixels.
    vignetting: relative radiance loss at the image corners (0 = none).
    fpn_sigma_k: fixed-pattern non-uniformity, NETD-equivalent kelvin (0 = perfectly corrected).
    """

    netd_k: float = 0.05
    psf_sigma_px: float = 0.7
    vignetting: float = 0.0
    fpn_sigma_k: float = 0.0

    def to_dict(self) -> dict:
        return {k: round(float(v), 6) for k, v in asdict(self).items()} | {"band_um": list(BAND_UM)}


def sense(radiance: np.ndarray, camera: Camera, rng: np.random.Generator, supersample: int = 1) -> np.ndarray:
    """Scene radiance at the aperture -> 16-bit T-linear counts.

    radiance: float (H*s, W*s) band radiance in W m^-2 sr^-1, rendered at ``supersample`` = s
        times the output resolution (blur is applied there, then s x s blocks are averaged).
    Returns uint16 (H, W).
    """
    s = int(supersample)
    hs, ws = radiance.shape
    h, w = hs // s, ws // s
    yy, xx = np.mgrid[0:hs, 0:ws]
    if camera.vignetting > 0:
        rho2 = (((yy + 0.5) / hs - 0.5) ** 2 + ((xx + 0.5) / ws - 0.5) ** 2) / 0.5
        radiance = radiance * (1.0 - camera.vignetting * rho2)
    if camera.psf_sigma_px > 0:
        radiance = ndimage.gaussian_filter(radiance, camera.psf_sigma_px * s, mode="nearest")
    if s > 1:
        radiance = radiance.reshape(h, s, w, s).mean(axis=(1, 3))
    slope = radiance_slope(NETD_REFERENCE_K)
    noise_k = rng.standard_normal((h, w)) * camera.netd_k
    if camera.fpn_sigma_k > 0:
        noise_k += rng.standard_normal((1, w)) * camera.fpn_sigma_k + rng.standard_normal((h, w)) * (0.5 * camera.fpn_sigma_k)
    t_app = radiance_temperature(radiance + noise_k * slope)
    counts = np.rint((t_app - KELVIN_OFFSET) / KELVIN_PER_COUNT)
    return np.clip(counts, 0, MAX_COUNT).astype(np.uint16)


def counts_to_kelvin(counts: np.ndarray) -> np.ndarray:
    """Counts of this sensor -> apparent temperature in kelvin (float64)."""
    return KELVIN_OFFSET + KELVIN_PER_COUNT * np.asarray(counts, dtype=np.float64)
