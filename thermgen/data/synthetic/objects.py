"""People, cars and bicycles as small assemblies of convex parts, and where they are placed.

Each part carries one physical temperature and emissivity (ranges in :mod:`.materials`). Local
frame: x forward (heading), y left, z up, metres, origin on the ground under the object's centre.
Sizes: car 3.9-4.9 x 1.7-1.9 x 1.4-1.7 m; person 1.55-1.9 m tall, 0.4-0.5 m across the shoulders;
bicycle 1.7 m long, wheels 0.66 m.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import geometry as g
from .layout import Layout
from .materials import SKIN_K, Conditions, u
from .geometry import View

LABELS = ("Person", "Car", "Bicycle")
CAR_STATES = ("running", "just_parked", "parked_cold")
PERSON_STATES = ("walking", "standing", "cycling")
BICYCLE_STATES = ("ridden", "parked")
# Footprint radius (m) used to keep objects from overlapping.
RADIUS = {"Car": 2.6, "Person": 0.45, "Bicycle": 0.9}
SIZE_M = {"Car": 4.4, "Person": 0.5, "Bicycle": 1.7}
LABEL_MIX = {
    "road": (0.30, 0.55, 0.15),
    "parking": (0.22, 0.70, 0.08),
    "plaza": (0.65, 0.15, 0.20),
    "riverside": (0.70, 0.10, 0.20),
    "playground": (0.85, 0.05, 0.10),
}
WALKABLE = {"sidewalk", "lot", "plaza", "lawn", "field", "track", "path"}
RIDEABLE = {"road", "sidewalk", "path", "plaza", "lot"}
# 0..12 objects; a few empty scenes, most with a handful.
COUNT_P = np.array([0.05] + [0.095] * 4 + [0.08] * 4 + [0.06] * 4)
COUNT_P = COUNT_P / COUNT_P.sum()


@dataclass
class Part:
    """A convex solid: world points (N, 3), temperature (K), emissivity, reflection class.

    reflect: 0 for up-facing surfaces (reflect the sky), 1 for side-facing ones (half sky, half ground).
    """

    name: str
    points: np.ndarray
    temperature_k: float
    emissivity: float
    reflect: int = 0


@dataclass
class Thing:
    """Something painted over the ground: an annotated object or a structure (building, tree)."""

    kind: str
    parts: list[Part]
    distance: float
    ordered: bool = False
    casts_shadow: bool = True
    info: dict[str, Any] = field(default_factory=dict)
    hotspot: str | None = None


def car(cond: Conditions, rng: np.random.Generator, x: float, y: float, heading: float, state: str, t_under: float) -> Thing:
    ta, s = cond.ambient_k, cond.solar
    length, width, height = u(rng, (3.9, 4.9)), u(rng, (1.7, 1.9)), u(rng, (1.4, 1.7))
    paint_eps, glass_eps = u(rng, (0.88, 0.95)), u(rng, (0.84, 0.90))
    if state == "running":
        body = ta + s * u(rng, (3, 15)) + u(rng, (0.5, 3))
        hood = body + u(rng, (18, 40))
        tyres = ta + u(rng, (8, 20))
        glass = ta + s * u(rng, (0, 6)) + u(rng, (0, 2))
        roof = body - u(rng, (0, 2))
    elif state == "just_parked":
        body = ta + s * u(rng, (5, 20)) + u(rng, (0.5, 2))
        hood = body + u(rng, (8, 22))
        tyres = ta + u(rng, (4, 10))
        glass = ta + s * u(rng, (2, 10))
        roof = body - u(rng, (0, 2))
    else:
        # Parked for hours: radiative and convective equilibrium with the ground around it.
        body = t_under + u(rng, (-2, 1.5))
        hood = body + u(rng, (-0.5, 0.5))
        roof = body + u(rng, (-0.5, 0.5))
        tyres = t_under + u(rng, (-1, 1))
        glass = t_under + u(rng, (-3, 0))
    hl, hw = length / 2, width / 2
    z_belt = 0.55 * height
    wheel_x = hl - 0.8
    parts_local = [
        ("body", g.cuboid(-hl, hl, -hw, hw, 0.3, z_belt), body, paint_eps, 0),
        ("cabin", g.cuboid(-0.32 * length, 0.18 * length, -hw + 0.08, hw - 0.08, z_belt, height), glass, glass_eps, 1),
        ("roof", g.cuboid(-0.27 * length, 0.1 * length, -hw + 0.15, hw - 0.15, height, height + 0.025), roof, paint_eps, 0),
        ("hood", g.cuboid(0.2 * length, hl - 0.1, -hw + 0.1, hw - 0.1, z_belt, z_belt + 0.02), hood, paint_eps, 0),
    ]
    # Parts touch but never sink into each other (the roof panel sits on the cabin, the exhaust
    # pipe sticks out behind the body, each wheel is the tread below the sill plus the sidewall
    # outside the flank), so the renderer can tell which of two parts faces the camera: from
    # above the body hides the wheels, from the side the sidewalls show.
    for sx in (-wheel_x, wheel_x):
        for sy in (-1, 1):
            parts_local.append(("tyre", g.cuboid(sx - 0.33, sx + 0.33, sy * (hw - 0.25), sy * (hw + 0.01), 0.0, 0.3), tyres, 0.95, 1))
            parts_local.append(("tyre", g.cuboid(sx - 0.33, sx + 0.33, sy * hw, sy * (hw + 0.01), 0.3, 0.62), tyres, 0.95, 1))
    if state == "running":
        parts_local.append(("exhaust", g.cuboid(-hl - 0.1, -hl, -hw + 0.3, -hw + 0.42, 0.22, 0.32), ta + u(rng, (30, 80)), 0.8, 1))
    parts = [Part(n, g.place(p, x, y, heading), t, e, r) for n, p, t, e, r in parts_local]
    return Thing("Car", parts, 0.0, info={"state": state, "heading_deg": float(np.degrees(heading) % 360)}, hotspot="hood" if state != "parked_cold" else None)


def person(cond: Conditions, rng: np.random.Generator, x: float, y: float, heading: float, state: str, z0: float = 0.0) -> Thing:
    ta, s = cond.ambient_k, cond.solar
    skin = u(rng, SKIN_K)
    head_t = skin - u(rng, (0, 3))
    cloth = ta + u(rng, (0.5, 0.75)) * (skin - ta) + s * u(rng, (0, 4)) + (u(rng, (0, 1)) if state == "walking" else 0.0)
    tall = u(rng, (1.55, 1.9)) - (0.45 if state == "cycling" else 0.0)
    shoulder = u(rng, (0.2, 0.25))
    bottom = 0.6 if state == "cycling" else 0.0
    head_z = tall - 0.24
    local = [
        ("clothing", g.elliptic_prism(0, 0, 0.13, shoulder, bottom, head_z - 0.02), cloth, u(rng, (0.95, 0.98)), 1),
        ("head", g.elliptic_prism(0, 0, 0.1, 0.085, head_z, tall, n=8), head_t, 0.98, 1),
    ]
    parts = [Part(n, g.place(p, x, y, heading, z0), t, e, r) for n, p, t, e, r in local]
    return Thing("Person", parts, 0.0, info={"state": state, "heading_deg": float(np.degrees(heading) % 360)}, hotspot="all")


def bicycle(cond: Conditions, rng: np.random.Generator, x: float, y: float, heading: float, state: str) -> Thing:
    ta, s = cond.ambient_k, cond.solar
    frame = ta + s * u(rng, (0, 8))
    tyres = ta + s * u(rng, (0, 4)) + (u(rng, (1, 4)) if state == "ridden" else 0.0)
    eps = u(rng, (0.75, 0.9))
    local = [
        ("wheel", g.vertical_disc(-0.52, 0.33, 0.33, 0.03), tyres, 0.95, 1),
        ("wheel", g.vertical_disc(0.52, 0.33, 0.33, 0.03), tyres, 0.95, 1),
        ("frame", g.cuboid(-0.45, 0.5, -0.04, 0.04, 0.45, 0.85), frame, eps, 1),
        ("handlebar", g.cuboid(0.45, 0.55, -0.27, 0.27, 0.95, 1.0), frame, eps, 0),
    ]
    parts = [Part(n, g.place(p, x, y, heading), t, e, r) for n, p, t, e, r in local]
    return Thing("Bicycle", parts, 0.0, info={"state": state, "heading_deg": float(np.degrees(heading) % 360)}, hotspot=None)


def populate(lay: Layout, cond: Conditions, view: View, rng: np.random.Generator, n: int | None = None) -> list[Thing]:
    """Place up to ``n`` objects (default: drawn 0..12) where they belong in the layout, visible in ``view``."""
    if n is None:
        n = int(rng.choice(len(COUNT_P), p=COUNT_P))
    mix = LABEL_MIX[cond.scene]
    things: list[Thing] = []
    taken: list[tuple[float, float, float]] = []
    free_slots = list(range(len(lay.slots)))
    for _ in range(n):
        label = str(rng.choice(LABELS, p=mix))
        for _try in range(30):
            placed = _spawn(label, lay, cond, view, rng, taken, free_slots, things)
            if placed:
                things.extend(placed)
                break
    return things


def _spawn(label, lay: Layout, cond, view: View, rng, taken, free_slots, things) -> list[Thing] | None:
    size = view.size
    # People like company: often stand near someone already placed.
    persons = [t for t in things if t.kind == "Person"]
    if label == "Person" and persons and rng.uniform() < 0.35:
        anchor = persons[int(rng.integers(len(persons)))].info["xy"]
        gx, gy = anchor[0] + rng.uniform(-3, 3), anchor[1] + rng.uniform(-3, 3)
    else:
        ground = view.ground_point(rng.uniform(0.04, 0.96) * size, rng.uniform(0.04, 0.96) * size)
        if ground is None:
            return None
        gx, gy = ground
    # Too small to see from here: place something else instead.
    if SIZE_M[label] * view.focal_px / view.distance(np.array([gx, gy, 0.0])) < 1.2:
        return None
    patch = lay.patch_at(gx, gy)
    heading = rng.uniform(0, 2 * np.pi)
    out: list[Thing] = []
    t_under = lay.surfaces[patch.surface].temperature_k
    if label == "Car":
        if patch.kind == "road" and patch.axis is not None:
            phi, ox, oy, off, width, lanes = patch.axis
            c, s = np.cos(phi), np.sin(phi)
            a = c * (gx - ox) + s * (gy - oy)
            lane = int(rng.integers(lanes))
            d = off - width / 2 + (lane + 0.5) * width / lanes
            gx, gy = ox + c * a - s * d, oy + s * a + c * d
            heading = phi + (np.pi if lane < lanes / 2 else 0.0)
            kerb = lane in (0, lanes - 1) and rng.uniform() < 0.25
            state = str(rng.choice(["parked_cold", "just_parked"], p=[0.6, 0.4])) if kerb else str(rng.choice(["running", "just_parked"], p=[0.85, 0.15]))
        elif patch.kind == "lot":
            if lay.slots:
                near = [i for i in free_slots if np.hypot(lay.slots[i][0] - gx, lay.slots[i][1] - gy) < 6.0]
                if not near:
                    return None
                i = near[int(rng.integers(len(near)))]
                gx, gy, heading = lay.slots[i]
                state = str(rng.choice(CAR_STATES, p=[0.10, 0.35, 0.55]))
            else:
                state = str(rng.choice(CAR_STATES, p=[0.2, 0.3, 0.5]))
        else:
            return None
        if not _free(lay, taken, gx, gy, "Car"):
            return None
        if patch.kind == "lot" and lay.slots:
            free_slots.remove(i)
        thing = car(cond, rng, gx, gy, heading, state, t_under)
    elif label == "Person":
        if patch.kind not in WALKABLE and not (patch.kind == "road" and rng.uniform() < 0.1):
            return None
        if not _free(lay, taken, gx, gy, "Person"):
            return None
        thing = person(cond, rng, gx, gy, heading, str(rng.choice(["walking", "standing"], p=[0.6, 0.4])))
    else:
        if patch.kind not in RIDEABLE:
            return None
        if not _free(lay, taken, gx, gy, "Bicycle"):
            return None
        ridden = patch.kind in ("road", "path") and rng.uniform() < 0.7 or rng.uniform() < 0.2
        if patch.kind == "road" and patch.axis is not None:
            heading = patch.axis[0] + (np.pi if rng.uniform() < 0.5 else 0.0)
        thing = bicycle(cond, rng, gx, gy, heading, "ridden" if ridden else "parked")
        if ridden:
            rider = person(cond, rng, gx - 0.1 * np.cos(heading), gy - 0.1 * np.sin(heading), heading, "cycling")
            rider.info["xy"] = (gx, gy)
            rider.info["surface"] = patch.surface
            out.append(rider)
    thing.info["xy"] = (gx, gy)
    thing.info["surface"] = patch.surface
    taken.append((gx, gy, RADIUS[label]))
    out.insert(0, thing)
    return out


def _free(lay: Layout, taken, x: float, y: float, label: str) -> bool:
    if lay.in_building(x, y, RADIUS[label]):
        return False
    r = RADIUS[label]
    return all(np.hypot(x - tx, y - ty) > r + tr for tx, ty, tr in taken)
