"""Scene conditions and the temperature/emissivity model of every material and object part.

Every temperature is ambient air temperature T_a plus offsets drawn uniformly from the stated
ranges (kelvin). ``S`` is the solar load (0 at night; by day
``S = w_weather * (0.3 + 0.7 * sin(sun elevation))`` with w = clear 1.0, snow 0.45, overcast 0.35,
fog 0.25, rain 0.1). ``C`` scales night-time radiative cooling (clear 1.0, snow 0.5, overcast 0.35,
fog 0.3, rain 0.2): a clear sky is a cold sink, clouds send radiation back.

Conditions (per scene)::

    ambient T_a    day 276-306 K, night 268-295 K, snow 258-273.5 K
    sky zenith     T_a minus: clear 25-45, overcast 3-10, snow 3-10, rain 1-5, fog 0.5-3 K
    sun elevation  12-70 deg by day

Surfaces, dry (T = T_a + S * solar + night, where night applies after dark; negative night
offsets are radiative cooling and are scaled by C)::

    material   emissivity    solar (K at S=1)  night (K)    texture sd (K, ground only)
    asphalt    0.92-0.95     10-22             +1.5..+5     0.45   stores heat: warm at night
    concrete   0.91-0.95      6-15             +0.5..+3.5   0.35
    grass      0.97-0.985     1-6              -5..-1       0.6    evaporation by day, cools at night
    soil       0.92-0.96      5-15             -3..0        0.6
    rubber     0.94-0.96     12-25              0..+3       0.5   sports tracks
    roof       0.90-0.95     10-30             -6..-1       0.8   thin, radiates to the sky at night
    wall       0.90-0.94      2-12             +0.5..+3     0.4   heat leaks from inside at night
    canopy     0.97-0.985    -1..3             -2..+0.5     0.8   tree crowns
    water      0.97-0.985    day T_a-5..-1 (+S*0..2), night T_a+0.5..+4 (thermally inert)
    snow       0.98-0.99     min(273.15, T_a + S*0..2) by day, T_a-6..-1 at night
    paint      0.90-0.93     the road's temperature minus S*2..6 (white paint reflects sunlight)

Wet surfaces (all in rain; roads in snow; 20 % of overcast/fog scenes after rain): a water film
pins the surface near air temperature and evaporation cools it,
``T = T_a + 0.35 * (dry offset) - U(0.5, 2)``, and raises emissivity to
``max(dry emissivity, U(0.965, 0.975))``: this, not stored heat, is why a wet road looks warmer
than its dry emissivity would show. Shade: ground in a shadow loses 80 % of its solar offset.

Objects (``T_s`` skin 305-309 K; ``T_u`` the surface under the object):

    person    head T_s - 0..3 (hair), emissivity 0.98; clothing T_a + k (T_s - T_a) + S*0..4,
              k = 0.5-0.75 (+0..1 K when walking), emissivity 0.95-0.98
    car       running: body T_a + S*3..15 + 0.5..3, engine hood body + 18..40, tyres T_a + 8..20,
              exhaust T_a + 30..80 (emissivity 0.8), cabin glass T_a + S*0..6 + 0..2
              just_parked: body T_a + S*5..20 + 0.5..2, hood body + 8..22, tyres T_a + 4..10
              (painted metal panels heat in the sun; moving air cools a running car)
              parked_cold (hours): in equilibrium with its surroundings: body/hood/roof T_u - 2..+1.5,
              tyres T_u - 1..+1, glass T_u - 3..0
              paint emissivity 0.88-0.95, glass 0.84-0.90, tyres 0.95
    bicycle   frame T_a + S*0..8 (emissivity 0.75-0.9), tyres T_a + S*0..4 (+1..4 K when ridden)
    windows   day: T_a + S*0..4; night: lit/heated rooms (60 %) T_a + 4..14, others T_a + 1..4;
              glass emissivity 0.84-0.90
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TIMES_OF_DAY = ("day", "night")
WEATHERS = ("clear", "overcast", "rain", "fog", "snow")
WEATHER_P = (0.45, 0.22, 0.13, 0.10, 0.10)
SCENE_TYPES = ("road", "parking", "plaza", "riverside", "playground")
SCENE_P = (0.30, 0.20, 0.20, 0.12, 0.18)
VIEWS = ("nadir", "oblique", "low")
VIEW_P = (0.40, 0.35, 0.25)

# Per view: the camera's depression angle below the horizon and its altitude (both low, high).
VIEW_BANDS = {"nadir": ((70.0, 90.0), (30.0, 130.0)), "oblique": ((30.0, 70.0), (30.0, 130.0)), "low": ((4.0, 25.0), (4.0, 25.0))}


def _cut(band: tuple[float, float], limits: tuple[float, float] | None, name: str) -> tuple[float, float] | None:
    if limits is None:
        return band
    try:
        lo, hi = (float(x) for x in limits)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {limits!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name} must be a finite (low, high) pair with low <= high, got {limits!r}")
    lo, hi = max(band[0], lo), min(band[1], hi)
    return (lo, hi) if lo <= hi else None


def envelope_bands(altitude_range_m: tuple[float, float] | None = None,
                   view_angle_range_deg: tuple[float, float] | None = None) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """:data:`VIEW_BANDS` cut to a flight envelope: {view: (angle band, altitude band)} of the views left.

    Raises ValueError when a range is malformed or no view is left.
    """
    out = {}
    for view, (angles, altitudes) in VIEW_BANDS.items():
        a = _cut(angles, view_angle_range_deg, "view_angle_range_deg")
        h = _cut(altitudes, altitude_range_m, "altitude_range_m")
        if a is not None and h is not None:
            out[view] = (a, h)
    if not out:
        raise ValueError(f"no view of the synthetic scenes fits altitude {altitude_range_m} m and view angle "
                         f"{view_angle_range_deg} deg; the views cover {VIEW_BANDS}")
    return out


SOLAR_WEIGHT = {"clear": 1.0, "overcast": 0.35, "fog": 0.25, "rain": 0.1, "snow": 0.45}
COOLING = {"clear": 1.0, "overcast": 0.35, "fog": 0.3, "rain": 0.2, "snow": 0.5}
SKY_DEPRESSION_K = {"clear": (25, 45), "overcast": (3, 10), "snow": (3, 10), "rain": (1, 5), "fog": (0.5, 3)}
EXTINCTION_PER_KM = {"clear": (0.05, 0.2), "overcast": (0.1, 0.4), "rain": (0.5, 2.5), "snow": (1.0, 4.0), "fog": (4.0, 15.0)}
SKIN_K = (305.0, 309.0)
WET_EMISSIVITY = (0.965, 0.975)
SHADE_FRACTION = 0.8

MATERIALS: dict[str, dict[str, tuple[float, float] | float]] = {
    "asphalt": {"eps": (0.92, 0.95), "solar": (10, 22), "night": (1.5, 5.0), "texture": 0.45},
    "concrete": {"eps": (0.91, 0.95), "solar": (6, 15), "night": (0.5, 3.5), "texture": 0.35},
    "grass": {"eps": (0.97, 0.985), "solar": (1, 6), "night": (-5, -1), "texture": 0.6},
    "soil": {"eps": (0.92, 0.96), "solar": (5, 15), "night": (-3, 0), "texture": 0.6},
    "rubber": {"eps": (0.94, 0.96), "solar": (12, 25), "night": (0, 3), "texture": 0.5},
    "roof": {"eps": (0.90, 0.95), "solar": (10, 30), "night": (-6, -1), "texture": 0.8},
    "wall": {"eps": (0.90, 0.94), "solar": (2, 12), "night": (0.5, 3), "texture": 0.4},
    "canopy": {"eps": (0.97, 0.985), "solar": (-1, 3), "night": (-2, 0.5), "texture": 0.8},
    "water": {"eps": (0.97, 0.985), "texture": 0.2},
    "snow": {"eps": (0.98, 0.99), "texture": 0.3},
    "paint": {"eps": (0.90, 0.93), "texture": 0.3},
}


def u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


@dataclass
class Conditions:
    """Everything about a scene that is not its layout. Temperatures in K, angles in degrees."""

    time_of_day: str
    weather: str
    ambient_k: float
    sky_zenith_k: float
    solar: float
    cooling: float
    sun_elevation_deg: float | None
    sun_azimuth_deg: float | None
    wet: bool
    extinction_per_km: float
    scene: str
    view: str
    altitude_m: float
    view_angle_deg: float
    hfov_deg: float

    def to_meta(self) -> dict[str, Any]:
        m = {
            "time_of_day": self.time_of_day,
            "weather": self.weather,
            "ambient_k": round(self.ambient_k, 3),
            "altitude_m": round(self.altitude_m, 2),
            "view_angle_deg": round(self.view_angle_deg, 2),
            "scene": self.scene,
            "view": self.view,
            "fov_deg": round(self.hfov_deg, 2),
            "solar_load": round(self.solar, 4),
            "wet": self.wet,
            "extinction_per_km": round(self.extinction_per_km, 4),
        }
        if self.sun_elevation_deg is not None:
            m["sun_elevation_deg"] = round(self.sun_elevation_deg, 2)
            m["sun_azimuth_deg"] = round(self.sun_azimuth_deg, 2)
        return m


def sample_conditions(
    rng: np.random.Generator,
    *,
    time_of_day: str | None = None,
    weather: str | None = None,
    scene: str | None = None,
    view: str | None = None,
    size: int = 128,
    altitude_range_m: tuple[float, float] | None = None,
    view_angle_range_deg: tuple[float, float] | None = None,
) -> Conditions:
    """Draw scene conditions; any keyword fixes that choice (validated against the allowed values).

    size: image side in pixels. Below 128 px the lens narrows in proportion (the ground footprint
        shrinks), so people and cars keep the pixel sizes they have at 128 px instead of vanishing.
    altitude_range_m, view_angle_range_deg: a camera's flight envelope, (low, high). Each view's own
        bands (:data:`VIEW_BANDS`) are cut to it and views outside it are never drawn (with both ranges
        None the draws are those of every earlier dataset).
    """
    for name, value, allowed in (("time_of_day", time_of_day, TIMES_OF_DAY), ("weather", weather, WEATHERS), ("scene", scene, SCENE_TYPES), ("view", view, VIEWS)):
        if value is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    bands = envelope_bands(altitude_range_m, view_angle_range_deg)
    if view is not None and view not in bands:
        raise ValueError(f"view {view!r} lies outside the flight envelope (altitude {altitude_range_m} m, "
                         f"view angle {view_angle_range_deg} deg); possible views: {sorted(bands)}")
    # Draw every choice whether or not it is fixed, so fixing one leaves the others' draws unchanged.
    tod_draw = str(rng.choice(TIMES_OF_DAY))
    weather_draw = str(rng.choice(WEATHERS, p=WEATHER_P))
    scene_draw = str(rng.choice(SCENE_TYPES, p=SCENE_P))
    if len(bands) == len(VIEWS):
        view_draw = str(rng.choice(VIEWS, p=VIEW_P))
    else:
        allowed_views = [v for v in VIEWS if v in bands]
        p = np.array([VIEW_P[VIEWS.index(v)] for v in allowed_views])
        view_draw = str(rng.choice(allowed_views, p=p / p.sum()))
    tod, weather, scene, view = time_of_day or tod_draw, weather or weather_draw, scene or scene_draw, view or view_draw

    if weather == "snow":
        ambient = u(rng, (258.0, 273.5))
    elif tod == "day":
        ambient = u(rng, (276.0, 306.0))
    else:
        ambient = u(rng, (268.0, 295.0))
    sky = ambient - u(rng, SKY_DEPRESSION_K[weather])
    if tod == "day":
        elev = u(rng, (12.0, 70.0))
        azim = u(rng, (0.0, 360.0))
        solar = SOLAR_WEIGHT[weather] * (0.3 + 0.7 * np.sin(np.radians(elev)))
    else:
        elev = azim = None
        solar = 0.0
        rng.uniform(size=2)  # keep the stream aligned with day scenes
    after_rain = rng.uniform() < 0.2
    wet = weather in ("rain", "snow") or (weather in ("overcast", "fog") and after_rain)
    beta = u(rng, EXTINCTION_PER_KM[weather])

    angles, altitudes = bands[view]
    if view == "nadir":
        straight_down = rng.uniform() < 0.5
        angle = 90.0 if straight_down and angles[1] >= 90.0 else u(rng, angles)
    else:
        angle = u(rng, angles)
    altitude = u(rng, altitudes)
    zoom = min(1.0, size / 128.0)
    if view == "low":
        hfov = u(rng, (30.0, 55.0)) * zoom
    else:
        # Choose the lens so the ground footprint across the image centre is 24-60 m at 128 px,
        # which keeps people a few pixels wide, as in HIT-UAV at 640 px.
        footprint = u(rng, (24.0, 60.0)) * zoom
        r_centre = altitude / np.sin(np.radians(angle))
        hfov = float(np.degrees(2 * np.arctan(footprint / 2 / r_centre)))
    return Conditions(tod, weather, ambient, sky, float(solar), COOLING[weather], elev, azim, bool(wet), beta, scene, view, altitude, angle, hfov)


@dataclass
class Surface:
    """One ground (or structure) surface with a single physical temperature and emissivity."""

    kind: str
    material: str
    temperature_k: float
    emissivity: float
    state: str
    solar_k: float = 0.0
    texture_k: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "material": self.material,
            "state": self.state,
            "temperature_k": round(self.temperature_k, 3),
            "emissivity": round(self.emissivity, 4),
        } | self.extra


def surface(kind: str, material: str, cond: Conditions, rng: np.random.Generator, *, wettable: bool = True, base: Surface | None = None) -> Surface:
    """Draw the temperature and emissivity of a surface of ``material`` under ``cond``.

    base: for "paint", the road surface the marking is painted on.
    """
    spec = MATERIALS[material]
    ta, s = cond.ambient_k, cond.solar
    eps = u(rng, spec["eps"])
    wet_draw = (u(rng, (0.5, 2.0)), u(rng, WET_EMISSIVITY))
    if material == "water":
        if cond.time_of_day == "day":
            t = ta + u(rng, (-5.0, -1.0)) + s * u(rng, (0.0, 2.0))
        else:
            t = ta + u(rng, (0.5, 4.0))
        return Surface(kind, material, t, eps, "liquid", 0.0, float(spec["texture"]))
    if material == "snow":
        t = min(273.15, ta + s * u(rng, (0.0, 2.0))) if cond.time_of_day == "day" else ta - u(rng, (1.0, 6.0))
        return Surface(kind, material, t, eps, "dry", 0.0, float(spec["texture"]))
    if material == "paint":
        assert base is not None
        t = base.temperature_k - s * u(rng, (2.0, 6.0)) * (0.35 if base.state == "wet" else 1.0)
        if base.state == "wet":
            eps = max(eps, base.emissivity)
        return Surface(kind, material, t, eps, base.state, base.solar_k * 0.7, float(spec["texture"]))
    solar = s * u(rng, spec["solar"])
    night = 0.0
    if cond.time_of_day == "night":
        night = u(rng, spec["night"])
        if night < 0:
            night *= cond.cooling
    offset = solar + night
    if cond.wet and wettable:
        return Surface(kind, material, ta + 0.35 * offset - wet_draw[0], max(eps, wet_draw[1]), "wet", 0.35 * solar, float(spec["texture"]))
    return Surface(kind, material, ta + offset, eps, "dry", solar, float(spec["texture"]))
