"""Procedural layouts: ground surfaces in world coordinates, buildings, trees and spawn rules.

A layout is a stack of ground patches painted in order (later patches cover earlier ones), each a
closed-form region of the ground plane (strip, rotated rectangle, disc, wavy half-plane, dashes,
rectangular ring), so a whole image of ground is classified with a few vectorised comparisons.
Five scene types, loosely after HIT-UAV's scenarios:

``road``        one or two roads (2-4 lanes, dashed centre line, sidewalks) through grass or soil,
                tree rows, houses set back
``parking``     an asphalt lot with painted bays in rows, an access aisle, grass margins
``plaza``       paved square with lawns, buildings and trees
``riverside``   a river or lake with a grassy bank and a path
``playground``  a sports pitch (grass or rubber) inside a running track, paved surround
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .materials import Conditions, Surface, surface

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Patch:
    """A ground region. Roads carry ``axis`` = (direction rad, origin x, origin y, lateral offset m,
    width m, lanes): the frame their lanes are laid out in."""

    surface: int
    kind: str
    mask: Mask
    axis: tuple[float, float, float, float, float, int] | None = None


@dataclass
class Building:
    x: float
    y: float
    half_len: float
    half_wid: float
    heading: float
    height: float
    roof: Surface
    wall: Surface


@dataclass
class Tree:
    x: float
    y: float
    trunk_r: float
    base: float
    crown_r: float
    crown_rz: float
    canopy: Surface
    trunk_k: float


@dataclass
class Layout:
    surfaces: list[Surface] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    slots: list[tuple[float, float, float]] = field(default_factory=list)

    def add_surface(self, s: Surface) -> int:
        self.surfaces.append(s)
        return len(self.surfaces) - 1

    def add(self, kind: str, sidx: int, mask: Mask, axis=None) -> None:
        self.patches.append(Patch(sidx, kind, mask, axis))

    def paint(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Surface index (uint8) of every ground point (x, y) (metres)."""
        out = np.zeros(np.shape(x), dtype=np.uint8)
        for p in self.patches:
            out[p.mask(x, y)] = p.surface
        return out

    def patch_at(self, x: float, y: float) -> Patch:
        xa, ya = np.array([x]), np.array([y])
        for p in reversed(self.patches):
            if p.mask(xa, ya)[0]:
                return p
        return self.patches[0]

    def in_building(self, x: float, y: float, margin: float = 0.5) -> bool:
        for b in self.buildings:
            c, s = np.cos(b.heading), np.sin(b.heading)
            lx, ly = c * (x - b.x) + s * (y - b.y), -s * (x - b.x) + c * (y - b.y)
            if abs(lx) < b.half_len + margin and abs(ly) < b.half_wid + margin:
                return True
        for t in self.trees:
            if np.hypot(x - t.x, y - t.y) < t.trunk_r + 0.4:
                return True
        return False


# --- region primitives (closures over numpy arrays; x, y in metres) ---------------------------

def everywhere() -> Mask:
    return lambda x, y: np.ones(np.shape(x), dtype=bool)


def _along_across(x, y, phi, cx, cy):
    c, s = np.cos(phi), np.sin(phi)
    return c * (x - cx) + s * (y - cy), -s * (x - cx) + c * (y - cy)


def strip(phi: float, cx: float, cy: float, half_w: float, offset: float = 0.0) -> Mask:
    """Infinite band along direction phi through (cx, cy), centred ``offset`` m to its left."""
    return lambda x, y: np.abs(_along_across(x, y, phi, cx, cy)[1] - offset) < half_w


def dashes(phi: float, cx: float, cy: float, half_w: float, period: float, duty: float, offset: float = 0.0) -> Mask:
    def m(x, y):
        a, d = _along_across(x, y, phi, cx, cy)
        return (np.abs(d - offset) < half_w) & (np.mod(a, period) < duty * period)
    return m


def rect(phi: float, cx: float, cy: float, half_len: float, half_wid: float) -> Mask:
    def m(x, y):
        a, d = _along_across(x, y, phi, cx, cy)
        return (np.abs(a) < half_len) & (np.abs(d) < half_wid)
    return m


def rect_ring(phi: float, cx: float, cy: float, half_len: float, half_wid: float, width: float) -> Mask:
    outer, inner = rect(phi, cx, cy, half_len, half_wid), rect(phi, cx, cy, half_len - width, half_wid - width)
    return lambda x, y: outer(x, y) & ~inner(x, y)


def disc(cx: float, cy: float, rx: float, ry: float, phi: float = 0.0) -> Mask:
    def m(x, y):
        a, d = _along_across(x, y, phi, cx, cy)
        return (a / rx) ** 2 + (d / ry) ** 2 < 1.0
    return m


def wavy_halfplane(phi: float, cx: float, cy: float, amp: float, wavelength: float, phase: float) -> Mask:
    """Ground to the left of a wavy line along phi (river banks, lake shores)."""
    def m(x, y):
        a, d = _along_across(x, y, phi, cx, cy)
        return d > amp * np.sin(2 * np.pi * a / wavelength + phase) + 0.4 * amp * np.sin(2 * np.pi * a / (0.37 * wavelength) + 2 * phase)
    return m


# --- scene recipes ----------------------------------------------------------------------------

def build_layout(cond: Conditions, rng: np.random.Generator, centre: tuple[float, float], extent: float) -> Layout:
    """Compose the ground layout of a ``cond.scene`` scene around ``centre`` (metres).

    extent: rough half-width (m) of the ground seen at the image centre, to scale the layout.
    """
    lay = Layout()
    cx, cy = centre
    snow = cond.weather == "snow"

    def surf(kind: str, material: str, **kw) -> int:
        if snow and material in ("grass", "soil") and kind != "canopy":
            material = "snow"
        return lay.add_surface(surface(kind, material, cond, rng, **kw))

    def jitter(scale: float) -> tuple[float, float]:
        return cx + rng.uniform(-scale, scale), cy + rng.uniform(-scale, scale)

    phi = rng.uniform(0, np.pi)
    scene = cond.scene
    if scene == "road":
        bg = surf("lawn", str(rng.choice(["grass", "soil"], p=[0.75, 0.25])))
        lay.add("lawn", bg, everywhere())
        n_roads = 1 if rng.uniform() < 0.65 else 2
        road = surf("road", "asphalt")
        walk = surf("sidewalk", "concrete")
        paint = lay.add_surface(surface("marking", "paint", cond, rng, base=lay.surfaces[road]))
        for k in range(n_roads):
            ph = phi + k * rng.uniform(np.pi / 3, 2 * np.pi / 3)
            ox, oy = jitter(0.25 * extent)
            lanes = int(rng.choice([2, 2, 3, 4]))
            half = lanes * rng.uniform(3.0, 3.6) / 2
            side = rng.uniform(1.5, 3.5)
            lay.add("sidewalk", walk, strip(ph, ox, oy, half + side))
            lay.add("road", road, strip(ph, ox, oy, half), axis=(ph, ox, oy, 0.0, 2 * half, lanes))
            lay.add("marking", paint, dashes(ph, ox, oy, 0.08, rng.uniform(6, 10), 0.5))
            if rng.uniform() < 0.6:
                _tree_row(lay, cond, rng, ph, ox, oy, half + side + rng.uniform(1.5, 4), extent)
        if rng.uniform() < 0.5:
            _buildings(lay, cond, rng, (cx, cy), extent, int(rng.integers(1, 4)))
    elif scene == "parking":
        bg = surf("lawn", "grass")
        lay.add("lawn", bg, everywhere())
        lot = surf("lot", "asphalt")
        paint = lay.add_surface(surface("marking", "paint", cond, rng, base=lay.surfaces[lot]))
        ox, oy = jitter(0.2 * extent)
        half_len, half_wid = extent * rng.uniform(0.8, 1.6), extent * rng.uniform(0.6, 1.2)
        lay.add("lot", lot, rect(phi, ox, oy, half_len, half_wid))
        # Rows of bays: a bay is 2.5 m wide and 5 m deep, rows face each other across 6 m aisles.
        bay_w, bay_d, aisle = 2.5, 5.0, 6.0
        c, s = np.cos(phi), np.sin(phi)
        row = -half_wid + 1.0
        facing = 1
        while row + bay_d < half_wid:
            centre_d = row + bay_d / 2
            lay.add("marking", paint, _bay_lines(phi, ox, oy, centre_d, bay_d, bay_w, half_len))
            for a in np.arange(-half_len + bay_w, half_len - bay_w / 2, bay_w):
                ax = a + bay_w / 2
                lay.slots.append((ox + c * ax - s * centre_d, oy + s * ax + c * centre_d, phi + np.pi / 2 * facing + (rng.uniform() < 0.3) * np.pi))
            row += bay_d + (aisle if facing == 1 else 0.3)
            facing = -facing
        lay.add("lawn", bg, rect_ring(phi, ox, oy, half_len + 3, half_wid + 3, 3.0))
        if rng.uniform() < 0.5:
            _tree_row(lay, cond, rng, phi, ox, oy, half_wid + 1.5, extent)
        if rng.uniform() < 0.4:
            _buildings(lay, cond, rng, (cx, cy), extent * 1.5, int(rng.integers(1, 3)))
    elif scene == "plaza":
        bg = surf("plaza", "concrete")
        lay.add("plaza", bg, everywhere())
        lawn = surf("lawn", "grass")
        for _ in range(int(rng.integers(1, 5))):
            ox, oy = jitter(extent)
            if rng.uniform() < 0.5:
                lay.add("lawn", lawn, rect(phi + rng.choice([0, np.pi / 2]), ox, oy, rng.uniform(4, 15), rng.uniform(3, 10)))
            else:
                r = rng.uniform(3, 10)
                lay.add("lawn", lawn, disc(ox, oy, r, r * rng.uniform(0.6, 1.0), phi))
        _buildings(lay, cond, rng, (cx, cy), extent, int(rng.integers(1, 4)))
        _trees_scattered(lay, cond, rng, (cx, cy), extent, int(rng.integers(0, 7)))
    elif scene == "riverside":
        bank = surf("lawn", "grass")
        lay.add("lawn", bank, everywhere())
        water = surf("water", "water")
        ox, oy = jitter(0.4 * extent)
        lay.add("water", water, wavy_halfplane(phi, ox, oy, rng.uniform(0.5, 3), rng.uniform(20, 60), rng.uniform(0, 6.28)))
        path = surf("path", "concrete")
        off = -rng.uniform(3, 10)
        lay.add("path", path, strip(phi, ox, oy, rng.uniform(1.2, 2.5), offset=off))
        if rng.uniform() < 0.5:
            road = surf("road", "asphalt")
            half, road_off = rng.uniform(3, 4), off - rng.uniform(8, 15)
            lay.add("road", road, strip(phi, ox, oy, half, offset=road_off), axis=(phi, ox, oy, road_off, 2 * half, 2))
        _trees_scattered(lay, cond, rng, (ox, oy), extent, int(rng.integers(0, 5)), avoid="water")
    else:  # playground
        bg = surf("plaza", "concrete")
        lay.add("plaza", bg, everywhere())
        ox, oy = jitter(0.3 * extent)
        half_len, half_wid = rng.uniform(30, 55), rng.uniform(20, 35)
        track = surf("track", "rubber")
        field_mat = str(rng.choice(["grass", "rubber", "soil"], p=[0.6, 0.2, 0.2]))
        pitch = surf("field", field_mat)
        lay.add("track", track, rect(phi, ox, oy, half_len, half_wid))
        lay.add("field", pitch, rect(phi, ox, oy, half_len - 6, half_wid - 6))
        lines = lay.add_surface(surface("marking", "paint", cond, rng, base=lay.surfaces[pitch]))
        lay.add("marking", lines, rect_ring(phi, ox, oy, half_len - 7, half_wid - 7, 0.12))
        lay.add("marking", lines, strip(phi + np.pi / 2, ox, oy, 0.06))
        if rng.uniform() < 0.5:
            _trees_scattered(lay, cond, rng, (cx, cy), extent * 1.5, int(rng.integers(1, 5)), avoid="track")
    return lay


def _bay_lines(phi, ox, oy, centre_d, depth, width, half_len) -> Mask:
    def m(x, y):
        a, d = _along_across(x, y, phi, ox, oy)
        in_row = (np.abs(d - centre_d) < depth / 2) & (np.abs(a) < half_len - 0.5)
        return in_row & (np.abs(np.mod(a, width) - width / 2) > width / 2 - 0.07)
    return m


def _buildings(lay: Layout, cond: Conditions, rng: np.random.Generator, centre, extent: float, n: int) -> None:
    # Facades and roofs of one scene share one wall and one roof surface: one construction style.
    roof = surface("roof", "roof", cond, rng)
    wall = surface("wall", "wall", cond, rng, wettable=False)
    low = cond.view == "low"
    for _ in range(n):
        for _try in range(12):
            x = centre[0] + rng.uniform(-1.3, 1.3) * extent
            y = centre[1] + rng.uniform(-1.3, 1.3) * extent * (2.0 if low else 1.0) + (extent if low else 0.0)
            hl, hw = rng.uniform(5, 15), rng.uniform(4, 9)
            head = rng.uniform(0, np.pi)
            corners = [(x + np.cos(head) * a - np.sin(head) * b, y + np.sin(head) * a + np.cos(head) * b) for a in (-hl, hl) for b in (-hw, hw)]
            if any(lay.patch_at(px, py).kind in ("road", "water", "track", "field", "lot") for px, py in corners + [(x, y)]):
                continue
            if any(np.hypot(x - b.x, y - b.y) < hl + b.half_len + 2 for b in lay.buildings):
                continue
            if np.hypot(x, y) < hl + hw:  # not on top of the camera
                continue
            h = rng.uniform(3.5, 9.0) if low else rng.uniform(4.0, 20.0)
            lay.buildings.append(Building(x, y, hl, hw, head, h, roof, wall))
            break


def _tree(cond: Conditions, rng: np.random.Generator, x: float, y: float, canopy: Surface) -> Tree:
    crown = rng.uniform(1.5, 3.5)
    return Tree(x, y, rng.uniform(0.12, 0.3), rng.uniform(1.5, 3.0), crown, crown * rng.uniform(0.7, 1.0), canopy,
                cond.ambient_k + cond.solar * rng.uniform(0, 3))


def _tree_row(lay: Layout, cond: Conditions, rng: np.random.Generator, phi: float, ox: float, oy: float, offset: float, extent: float) -> None:
    canopy = surface("canopy", "canopy", cond, rng)
    spacing = rng.uniform(6, 12)
    c, s = np.cos(phi), np.sin(phi)
    side = rng.choice([-1.0, 1.0]) if rng.uniform() < 0.6 else None
    for sgn in ([side] if side is not None else [-1.0, 1.0]):
        for a in np.arange(-3 * extent, 3 * extent, spacing) + rng.uniform(0, spacing):
            d = sgn * offset
            x, y = ox + c * a - s * d, oy + s * a + c * d
            if rng.uniform() < 0.85 and not lay.in_building(x, y, 3.0):
                lay.trees.append(_tree(cond, rng, x, y, canopy))


def _trees_scattered(lay: Layout, cond: Conditions, rng: np.random.Generator, centre, extent: float, n: int, avoid: str = "road") -> None:
    canopy = surface("canopy", "canopy", cond, rng)
    for _ in range(n):
        x, y = centre[0] + rng.uniform(-1.5, 1.5) * extent, centre[1] + rng.uniform(-1.5, 1.5) * extent
        if lay.patch_at(x, y).kind in (avoid, "water", "road", "field", "track") or lay.in_building(x, y, 3.0):
            continue
        lay.trees.append(_tree(cond, rng, x, y, canopy))
