"""Camera geometry and rasterisation for the synthetic scenes (pinhole camera over a flat ground).

World frame: X east, Y north (horizontal), Z up, metres; the ground is Z = 0. The camera sits at
(0, 0, altitude) looking north, pitched down by ``pitch`` (90 deg = nadir, 0 = horizon), no roll.
Image axes: u to the right (= +X), v downwards; pixel (j, i) has its centre at (j + 0.5, i + 0.5).

Solid parts are convex (cuboids, elliptic prisms); the silhouette of a convex solid is the convex
hull of its projected vertices, so each part is rasterised as one convex polygon and the scene is
composed far to near (painter's algorithm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class View:
    """A pinhole camera. size: image side in pixels (square); focal_px: focal length in pixels."""

    size: int
    focal_px: float
    altitude_m: float
    pitch_rad: float

    @property
    def forward(self) -> np.ndarray:
        return np.array([0.0, np.cos(self.pitch_rad), -np.sin(self.pitch_rad)])

    @property
    def down(self) -> np.ndarray:
        return np.array([0.0, -np.sin(self.pitch_rad), -np.cos(self.pitch_rad)])

    def rays(self) -> dict[str, np.ndarray]:
        """Per-pixel ray hits, each (size, size): ground X, Y (m), range (m), sky mask, elevation (rad)."""
        c = self.size / 2.0
        idx = (np.arange(self.size) + 0.5 - c) / self.focal_px
        a = idx[None, :]
        b = idx[:, None]
        sp, cp = np.sin(self.pitch_rad), np.cos(self.pitch_rad)
        dy = cp - b * sp
        dz = -b * cp - sp
        norm = np.sqrt(a * a + dy * dy + dz * dz)
        # Rays at or above the horizon see the sky; just below it the ground is so far away that the
        # atmosphere hides it anyway, so the ray parameter is capped instead of going to infinity.
        sky = dz >= -1e-4
        t = self.altitude_m / np.maximum(-dz, 1e-4)
        x = np.broadcast_to(t * a, (self.size, self.size))
        y = np.broadcast_to(t * dy, (self.size, self.size))
        rng = np.broadcast_to(t * norm, (self.size, self.size))
        elev = np.broadcast_to(np.arcsin(np.clip(dz / norm, -1, 1)), (self.size, self.size))
        return {"x": x, "y": y, "range": rng, "sky": np.broadcast_to(sky, (self.size, self.size)), "elevation": elev}

    def ground_point(self, u: float, v: float) -> tuple[float, float] | None:
        """Where the ray through image point (u, v) meets the ground, or None (sky)."""
        c = self.size / 2.0
        a, b = (u - c) / self.focal_px, (v - c) / self.focal_px
        sp, cp = np.sin(self.pitch_rad), np.cos(self.pitch_rad)
        dz = -b * cp - sp
        if dz > -1e-3:
            return None
        t = self.altitude_m / -dz
        return float(t * a), float(t * (cp - b * sp))

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points (N, 3) -> image u, v (pixels) and depth along the optical axis (m)."""
        d = pts - np.array([0.0, 0.0, self.altitude_m])
        z = d @ self.forward
        zc = np.maximum(z, 1e-6)
        u = self.size / 2.0 + self.focal_px * d[:, 0] / zc
        v = self.size / 2.0 + self.focal_px * (d @ self.down) / zc
        return u, v, z

    def distance(self, pt: np.ndarray) -> float:
        """Euclidean distance (m) from the camera to a world point (3,)."""
        return float(np.linalg.norm(np.asarray(pt, dtype=float) - np.array([0.0, 0.0, self.altitude_m])))


def convex_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points (Andrew's monotone chain), vertices (K, 2) counter-clockwise."""
    order = np.lexsort((y, x))
    pts = list(zip(np.asarray(x, dtype=float)[order].tolist(), np.asarray(y, dtype=float)[order].tolist()))
    if len(pts) <= 2:
        return np.array(pts, dtype=float)

    def half(seq):
        chain: list = []
        for p in seq:
            while len(chain) >= 2:
                (ox, oy), (ax, ay) = chain[-2], chain[-1]
                if (ax - ox) * (p[1] - oy) - (ay - oy) * (p[0] - ox) > 1e-12:
                    break
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1], dtype=float)


def inside_convex(px: np.ndarray, py: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Boolean mask of points (px, py) (broadcastable arrays) inside a counter-clockwise hull (K, 2)."""
    if len(hull) < 3:
        return np.zeros(np.broadcast_shapes(np.shape(px), np.shape(py)), dtype=bool)
    inside = None
    pts = hull.tolist()
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        edge = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0) >= 0
        inside = edge if inside is None else inside & edge
    return inside


def raster_convex(u: np.ndarray, v: np.ndarray, size: int) -> tuple[slice, slice, np.ndarray] | None:
    """Rasterise the convex hull of image points (u, v) on a size x size grid.

    Returns (rows, cols, mask) with mask covering image[rows, cols], or None when nothing is covered.
    """
    hull = convex_hull(u, v)
    if len(hull) < 3:
        return None
    j0 = max(int(np.floor(hull[:, 0].min() - 0.5)), 0)
    j1 = min(int(np.ceil(hull[:, 0].max() + 0.5)), size)
    i0 = max(int(np.floor(hull[:, 1].min() - 0.5)), 0)
    i1 = min(int(np.ceil(hull[:, 1].max() + 0.5)), size)
    if j1 <= j0 or i1 <= i0:
        return None
    px = np.arange(j0, j1)[None, :] + 0.5
    py = np.arange(i0, i1)[:, None] + 0.5
    mask = inside_convex(px, py, hull)
    if not mask.any():
        return None
    return slice(i0, i1), slice(j0, j1), mask


def cuboid(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """The 8 corners (8, 3) of an axis-aligned box in an object's local frame."""
    return np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)], dtype=float)


def elliptic_prism(cx: float, cy: float, rx: float, ry: float, z0: float, z1: float, n: int = 10) -> np.ndarray:
    """2n points (2n, 3) outlining a vertical elliptic cylinder (people, tree trunks)."""
    a = np.arange(n) * (2 * np.pi / n)
    ring = np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)
    return np.concatenate([np.column_stack([ring, np.full(n, z0)]), np.column_stack([ring, np.full(n, z1)])])


def vertical_disc(cx: float, cz: float, radius: float, half_thick: float, n: int = 10) -> np.ndarray:
    """Points (2n, 3) of a wheel: a disc in the local x-z plane, thickness 2*half_thick along y."""
    a = np.arange(n) * (2 * np.pi / n)
    ring = np.stack([cx + radius * np.cos(a), cz + radius * np.sin(a)], axis=1)
    return np.concatenate([np.column_stack([ring[:, 0], np.full(n, sgn * half_thick), ring[:, 1]]) for sgn in (-1.0, 1.0)])


def ellipsoid(cx: float, cy: float, cz: float, r: float, rz: float, n: int = 12) -> np.ndarray:
    """Points on three great circles of an ellipsoid (tree canopies): (3n, 3)."""
    a = np.arange(n) * (2 * np.pi / n)
    c, s = np.cos(a), np.sin(a)
    zero = np.zeros(n)
    return np.concatenate([
        np.column_stack([cx + r * c, cy + r * s, cz + zero]),
        np.column_stack([cx + r * c, cy + zero, cz + rz * s]),
        np.column_stack([cx + zero, cy + r * c, cz + rz * s]),
    ])


def place(local: np.ndarray, x: float, y: float, heading: float, z: float = 0.0) -> np.ndarray:
    """Local object points (N, 3) (x forward, y left) -> world, at ground point (x, y), heading rad."""
    c, s = np.cos(heading), np.sin(heading)
    out = np.empty_like(local)
    out[:, 0] = x + c * local[:, 0] - s * local[:, 1]
    out[:, 1] = y + s * local[:, 0] + c * local[:, 1]
    out[:, 2] = z + local[:, 2]
    return out
