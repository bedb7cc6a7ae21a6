"""Compose and render one synthetic thermal scene: conditions -> layout -> objects -> radiance -> counts.

Rendering happens at ``SUPERSAMPLE`` x the output resolution so that objects of one or two pixels
get partial coverage, then the camera model (:func:`.radiometry.sense`) blurs, averages down,
adds noise and quantises. Per pixel, at the high resolution::

    T, eps, reflect class, path length r   from the ground layout, shadows, then things far to near
    L_surf   = eps * L(T) + (1 - eps) * L_refl(reflect class)
    L_sensor = tau(r) * L_surf + (1 - tau(r)) * L(T_a);  sky pixels: L_sky(elevation)

Objects are annotated with the bounding box of their *visible* pixels (occlusion by nearer things
removed); objects with less than ``MIN_VISIBLE_PX`` visible output pixels are not annotated and are
counted in ``meta["unannotated_objects"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from . import geometry as g
from . import radiometry as R
from .layout import Layout, build_layout
from .materials import SHADE_FRACTION, Conditions, sample_conditions, u
from .objects import COUNT_P, Part, Thing, populate

SUPERSAMPLE = 2
MIN_VISIBLE_PX = 1.0
HOT_CONTRAST_K = 3.0
SKY = 255
GENERATOR = {"name": "thermgen-synthetic", "version": "2"}
SCENE_OPTIONS = ("time_of_day", "weather", "scene", "view", "n_objects", "altitude_range_m", "view_angle_range_deg", "object_scale")
# Parts of one object that touch along a face count as separated by it up to this overlap (m):
# rounding in their placed corners.
CONTACT_M = 1e-3


@dataclass
class SceneRender:
    """A rendered scene with its hidden layers (for tests and analysis).

    image: uint16 (size, size) counts; gt: the ground-truth dict (see :func:`render_scene`).
    The layers are at the render resolution (size * supersample), before the camera:
    temperature_k / emissivity (float), surface (uint8 index into gt["meta"]["surfaces"], 255 = sky
    or not ground), thing (int16: index into gt["objects"] for annotated objects, -2 for
    structures and unannotated objects, -1 for bare ground/sky), hotspot (bool: the pixel shows
    its object's hotspot part: a car's engine hood, all of a person), shadow (bool, ground in shade).
    """

    image: np.ndarray
    gt: dict[str, Any]
    temperature_k: np.ndarray
    emissivity: np.ndarray
    surface: np.ndarray
    thing: np.ndarray
    hotspot: np.ndarray
    shadow: np.ndarray
    supersample: int


def check_object_scale(scale: Any) -> Any:
    """``object_scale`` as given, after checking it is None or a positive finite number (not a bool)."""
    if scale is not None and not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"object_scale must be a positive number, got {scale!r}")
    return scale


def render_scene(rng_or_seed: int | np.random.Generator | np.random.SeedSequence, size: int = 128, **fixed: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one random scene in memory.

    rng_or_seed: an int seed, a SeedSequence or a numpy Generator (consumed).
    size: image side in pixels (square).
    fixed: optional ``time_of_day``, ``weather``, ``scene``, ``view`` (see
        :mod:`.materials`) and ``n_objects`` to fix those draws; ``altitude_range_m`` and
        ``view_angle_range_deg`` (a flight envelope, see :func:`.materials.sample_conditions`) and
        ``object_scale`` (the drawn number of objects to place is multiplied by it, rounded) to
        shape them.

    Returns (uint16 (size, size) T-linear counts, ground truth dict) with keys
    ``width``, ``height``, ``objects`` (label, box [x, y, w, h] px, state, temperature_k,
    emissivity, hot, contrast_k, hotspot_box, parts, ...), ``meta`` (scene metadata, surfaces,
    sky, camera), ``radiometric`` ({"kelvin_per_count", "kelvin_offset"}) and ``netd_k``.

    Per object: ``temperature_k`` / ``emissivity`` are averages over its visible pixels (physical,
    K), ``max_temperature_k`` is the hottest part among them; ``parts`` lists every part's own
    values, seen or not. ``contrast_k`` is the apparent-temperature difference at the sensor
    (emissivity, reflected sky and atmosphere included) between the object's hotspot (a car's
    engine hood; a whole person; a bicycle's mean; the visible mean when the hotspot part is out of
    sight) and the surface it stands on; ``hot`` is ``contrast_k >= 3 K``. ``hotspot_box`` bounds
    the visible hotspot pixels (None when none is visible). All of these are measured on the final
    pixels, after nearer parts and things have covered what they hide.
    """
    r = render_scene_layers(rng_or_seed, size, **fixed)
    return r.image, r.gt


def render_scene_layers(rng_or_seed, size: int = 128, **fixed: Any) -> SceneRender:
    """:func:`render_scene`, also returning the physical layers behind the pixels."""
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8 pixels, got {size!r}")
    unknown = set(fixed) - set(SCENE_OPTIONS)
    if unknown:
        raise ValueError(f"unknown scene option(s) {sorted(unknown)}; allowed: {', '.join(SCENE_OPTIONS)}")
    fixed = dict(fixed)
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)
    n_objects = fixed.pop("n_objects", None)
    object_scale = check_object_scale(fixed.pop("object_scale", None))
    if n_objects is None and object_scale not in (None, 1, 1.0):
        n_objects = int(round(int(rng.choice(len(COUNT_P), p=COUNT_P)) * float(object_scale)))
    cond = sample_conditions(rng, size=int(size), **fixed)
    s = SUPERSAMPLE
    focal = size / 2 / np.tan(np.radians(cond.hfov_deg) / 2)
    view = g.View(size, focal, cond.altitude_m, np.radians(cond.view_angle_deg))
    hview = g.View(size * s, focal * s, cond.altitude_m, np.radians(cond.view_angle_deg))
    centre = view.ground_point(size / 2, size / 2) or (0.0, cond.altitude_m)
    extent = np.tan(np.radians(cond.hfov_deg) / 2) * view.distance(np.array([*centre, 0.0]))
    lay = build_layout(cond, rng, centre, extent)
    objects = populate(lay, cond, view, rng, n_objects)
    camera = R.Camera(
        netd_k=u(rng, (0.03, 0.08)),
        psf_sigma_px=u(rng, (0.4, 1.0)),
        vignetting=u(rng, (0.005, 0.03)) if rng.uniform() < 0.5 else 0.0,
        fpn_sigma_k=u(rng, (0.01, 0.04)) if rng.uniform() < 0.5 else 0.0,
    )
    return _render(cond, lay, objects, hview, camera, rng, size)


def _structures(lay: Layout, cond: Conditions, view: g.View, rng: np.random.Generator) -> tuple[list[Thing], int]:
    things: list[Thing] = []
    lit = 0
    cam = np.array([0.0, 0.0, view.altitude_m])
    for b in lay.buildings:
        c, s = np.cos(b.heading), np.sin(b.heading)
        parts: list[Part] = []
        faces = [((b.half_len, -b.half_wid), (b.half_len, b.half_wid), (1, 0)), ((-b.half_len, b.half_wid), (-b.half_len, -b.half_wid), (-1, 0)),
                 ((b.half_len, b.half_wid), (-b.half_len, b.half_wid), (0, 1)), ((-b.half_len, -b.half_wid), (b.half_len, -b.half_wid), (0, -1))]
        for (a0, b0), (a1, b1), (nx, ny) in faces:
            n = np.array([c * nx - s * ny, s * nx + c * ny, 0.0])
            p0 = np.array([b.x + c * a0 - s * b0, b.y + s * a0 + c * b0, 0.0])
            p1 = np.array([b.x + c * a1 - s * b1, b.y + s * a1 + c * b1, 0.0])
            if np.dot(cam - (p0 + p1) / 2, n) <= 0:
                continue  # facing away
            wall = np.array([p0, p1, p0 + [0, 0, b.height], p1 + [0, 0, b.height]])
            parts.append(Part("wall", wall, b.wall.temperature_k, b.wall.emissivity, 1))
            floors, length = max(1, int(b.height / 3.2)), np.linalg.norm(p1 - p0)
            per_floor = int(length / 3.0)
            along = (p1 - p0) / max(length, 1e-6)
            for f in range(floors):
                for k in range(per_floor):
                    a = (k + 0.5) * length / per_floor
                    z0 = f * 3.2 + 1.0
                    base = p0 + along * a + n * 0.05
                    pts = np.array([base - along * 0.6 + [0, 0, z0], base + along * 0.6 + [0, 0, z0],
                                    base - along * 0.6 + [0, 0, z0 + 1.4], base + along * 0.6 + [0, 0, z0 + 1.4]])
                    if cond.time_of_day == "night":
                        on = rng.uniform() < 0.6
                        lit += on
                        t = cond.ambient_k + (u(rng, (4, 14)) if on else u(rng, (1, 4)))
                    else:
                        t = cond.ambient_k + cond.solar * u(rng, (0, 4))
                    parts.append(Part("window", pts, t, u(rng, (0.84, 0.90)), 1))
        if view.altitude_m > b.height:
            roof = np.array([[b.x + c * a - s * w, b.y + s * a + c * w, b.height] for a in (-b.half_len, b.half_len) for w in (-b.half_wid, b.half_wid)])
            parts.append(Part("roof", roof, b.roof.temperature_k, b.roof.emissivity, 0))
        box = g.cuboid(-b.half_len, b.half_len, -b.half_wid, b.half_wid, 0, b.height)
        solid = g.place(box, b.x, b.y, b.heading)
        dist = min(view.distance(p) for p in solid)
        things.append(Thing("building", parts, dist, ordered=True, info={"solid": solid}))
    for t in lay.trees:
        trunk = Part("trunk", g.elliptic_prism(t.x, t.y, t.trunk_r, t.trunk_r, 0.0, t.base + t.crown_rz, n=6), t.trunk_k, 0.95, 1)
        crown = Part("canopy", g.ellipsoid(t.x, t.y, t.base + t.crown_rz, t.crown_r, t.crown_rz), t.canopy.temperature_k, t.canopy.emissivity, 0)
        things.append(Thing("tree", [trunk, crown], view.distance(np.array([t.x, t.y, t.base])), ordered=True))
    return things, lit


def _shadow_mask(things: list[Thing], cond: Conditions, view: g.View, gx: np.ndarray, gy: np.ndarray, ground: np.ndarray) -> np.ndarray:
    shadow = np.zeros(gx.shape, dtype=bool)
    if cond.sun_elevation_deg is None or cond.solar < 0.1:
        return shadow
    az = np.radians(cond.sun_azimuth_deg)
    # Shadows fall away from the sun: a point at height z lands z * cot(elevation) further on.
    away = -np.array([np.sin(az), np.cos(az)]) / np.tan(np.radians(cond.sun_elevation_deg))
    for th in things:
        solids = [th.info["solid"]] if "solid" in th.info else [p.points for p in th.parts]
        for pts in solids:
            proj = pts[:, :2] + pts[:, 2:3] * away
            hull = g.convex_hull(proj[:, 0], proj[:, 1])
            if len(hull) < 3:
                continue
            u_, v_, z_ = view.project(np.column_stack([hull, np.zeros(len(hull))]))
            if (z_ <= 0.1).any():
                i0, i1, j0, j1 = 0, view.size, 0, view.size
            else:
                j0, j1 = max(int(u_.min()) - 1, 0), min(int(u_.max()) + 2, view.size)
                i0, i1 = max(int(v_.min()) - 1, 0), min(int(v_.max()) + 2, view.size)
                if j1 <= j0 or i1 <= i0:
                    continue
            shadow[i0:i1, j0:j1] |= g.inside_convex(gx[i0:i1, j0:j1], gy[i0:i1, j0:j1], hull)
    return shadow & ground


def _paint_order(parts: list[Part], view: g.View) -> list[tuple[int, Part]]:
    """Far-to-near painting order of one object's convex parts, as (index in ``parts``, part).

    Sorting parts by the distance of their centres is wrong for parts that touch: a flat engine
    hood lying on a car body has its centre further from the camera than the body's centre
    whenever it points away, so the body was painted over it and the hood vanished from the
    pixels. Instead, when a face plane of one part has the other part wholly on its outer side
    (within ``CONTACT_M``; the most clearly separating face of either part is used), the part on
    the camera's side of that plane is painted last: rays from the camera to it cannot cross the
    other part. Parts whose outlines cannot overlap in the image need no order; parts that
    interpenetrate (no such plane) keep the centre-distance order.
    """
    cam = np.array([0.0, 0.0, view.altitude_m])
    far = [view.distance(p.points.mean(axis=0)) for p in parts]
    planes, extent = [], []
    for p in parts:
        try:
            planes.append(ConvexHull(p.points).equations)  # (F, 4): outward unit normal, offset
        except (QhullError, ValueError):
            planes.append(np.zeros((0, 4)))  # flat or degenerate: no faces to separate by
        u_, v_, _ = view.project(p.points)
        extent.append((u_.min(), u_.max(), v_.min(), v_.max()))
    k = len(parts)
    after: list[set[int]] = [set() for _ in range(k)]  # after[a]: parts to paint after a
    for a in range(k):
        for b in range(a + 1, k):
            ea, eb = extent[a], extent[b]
            if ea[1] < eb[0] or eb[1] < ea[0] or ea[3] < eb[2] or eb[3] < ea[2]:
                continue
            best = (-np.inf, None, None)
            for first, second in ((a, b), (b, a)):
                eq = planes[first]
                if not len(eq):
                    continue
                # Per face of `first`: how far the nearest point of `second` lies outside it.
                gap = (parts[second].points @ eq[:, :3].T + eq[:, 3]).min(axis=0)
                f = int(np.argmax(gap))
                if gap[f] > best[0]:
                    best = (float(gap[f]), first, eq[f])
            gap, first, face = best
            if first is None or gap < -CONTACT_M:
                continue
            second = b if first == a else a
            if float(cam @ face[:3] + face[3]) > 0:  # camera with `second`: it may hide `first`
                after[first].add(second)
            else:
                after[second].add(first)
    waiting = [0] * k
    for a in range(k):
        for b in after[a]:
            waiting[b] += 1
    out: list[tuple[int, Part]] = []
    left = set(range(k))
    while left:
        ready = [i for i in left if waiting[i] == 0] or list(left)  # a cycle: fall back to distance
        i = max(ready, key=lambda j: (far[j], -j))
        left.remove(i)
        out.append((i, parts[i]))
        for b in after[i]:
            waiting[b] -= 1
    return out


def _texture(gx: np.ndarray, gy: np.ndarray, ground: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth unit-variance noise fixed to the ground (so it shrinks with distance): two octaves,
    1-2 m cells (grain of turf, patches of wear) plus 4x coarser ones (uneven heating, damp)."""
    cell = u(rng, (1.0, 2.0))
    x = np.clip(gx, -400, 400)
    y = np.clip(gy, -400, 1200)
    if ground.any():
        x0, x1, y0, y1 = x[ground].min(), x[ground].max(), y[ground].min(), y[ground].max()
    else:
        x0 = x1 = y0 = y1 = 0.0
    out = np.zeros(gx.shape)
    for scale, weight in ((1.0, 0.6), (4.0, 0.8)):
        c = cell * scale
        nx, ny = min(int((x1 - x0) / c) + 4, 600), min(int((y1 - y0) / c) + 4, 600)
        grid = ndimage.gaussian_filter(rng.standard_normal((ny, nx)), 0.8, mode="wrap")
        grid *= weight / (grid.std() + 1e-9)
        coords = np.stack([(y - y0) / c + 1, (x - x0) / c + 1]).reshape(2, -1)
        out += ndimage.map_coordinates(grid, coords, order=1, mode="nearest").reshape(gx.shape)
    return out


def _render(cond: Conditions, lay: Layout, objects: list[Thing], view: g.View, camera: R.Camera, rng: np.random.Generator, size: int) -> SceneRender:
    s = SUPERSAMPLE
    n = view.size
    rays = view.rays()
    sky = rays["sky"]
    ground = ~sky
    gx, gy = rays["x"], rays["y"]

    surf = lay.paint(gx, gy)
    surf[sky] = SKY
    n_s = len(lay.surfaces)
    temp_of = np.array([x.temperature_k for x in lay.surfaces] + [0.0] * (256 - n_s))
    eps_of = np.array([x.emissivity for x in lay.surfaces] + [1.0] * (256 - n_s))
    solar_of = np.array([x.solar_k for x in lay.surfaces] + [0.0] * (256 - n_s))
    tex_of = np.array([x.texture_k for x in lay.surfaces] + [0.0] * (256 - n_s))
    temp = temp_of[surf] + tex_of[surf] * _texture(gx, gy, ground, rng)
    eps = eps_of[surf]
    reflect = np.zeros((n, n), dtype=np.int8)
    dist = np.array(rays["range"], dtype=float)
    thing_map = np.full((n, n), -1, dtype=np.int16)
    hot_map = np.zeros((n, n), dtype=bool)

    structures, lit_windows = _structures(lay, cond, view, rng)
    shadow = _shadow_mask(structures + objects, cond, view, gx, gy, ground)
    temp = temp - SHADE_FRACTION * solar_of[surf] * shadow

    # Paint far to near. Objects keep their index in `objects`; structures get -2.
    for i, th in enumerate(objects):
        th.distance = view.distance(np.array([*th.info["xy"], 0.8]))
    order = sorted([(th.distance, -2, th) for th in structures] + [(th.distance, i, th) for i, th in enumerate(objects)], key=lambda x: -x[0])
    # Which part of its thing each pixel finally shows (index into thing.parts): the ground truth
    # is measured on these final pixels, not on each part's outline before nearer parts cover it.
    part_map = np.full((n, n), -1, dtype=np.int16)
    silhouette_px: dict[int, int] = {}
    for _, idx, th in order:
        parts = list(enumerate(th.parts)) if th.ordered else _paint_order(th.parts, view)
        union: list[tuple[slice, slice, np.ndarray]] = []
        for pi, p in parts:
            u_, v_, z_ = view.project(p.points)
            if (z_ <= 0.1).any():
                continue
            hit = g.raster_convex(u_, v_, n)
            if hit is None:
                continue
            rows, cols, m = hit
            temp[rows, cols][m] = p.temperature_k
            eps[rows, cols][m] = p.emissivity
            reflect[rows, cols][m] = p.reflect
            dist[rows, cols][m] = view.distance(p.points.mean(axis=0))
            thing_map[rows, cols][m] = idx
            part_map[rows, cols][m] = pi
            hot_map[rows, cols][m] = idx >= 0 and th.hotspot in ("all", p.name)
            surf[rows, cols][m] = SKY
            if idx >= 0:
                union.append(hit)
        if idx >= 0:
            scratch = np.zeros((n, n), dtype=bool)
            for rows, cols, m in union:
                scratch[rows, cols] |= m
            silhouette_px[idx] = int(scratch.sum())

    # Radiance and atmosphere.
    l_amb = float(R.band_radiance(cond.ambient_k))
    l_down = R.downwelling_radiance(cond.ambient_k, cond.sky_zenith_k)
    l_refl = (l_down, 0.5 * (l_down + l_amb))
    radiance = eps * R.band_radiance(temp) + (1 - eps) * np.where(reflect == 0, l_refl[0], l_refl[1])
    tau = np.exp(-cond.extinction_per_km * 1e-3 * dist)
    radiance = tau * radiance + (1 - tau) * l_amb
    sky_now = sky & (thing_map == -1)
    if sky_now.any():
        radiance[sky_now] = R.sky_radiance(rays["elevation"][sky_now], cond.ambient_k, cond.sky_zenith_k)
        temp[sky_now] = R.radiance_temperature(radiance[sky_now])
        eps[sky_now] = 1.0
    image = R.sense(radiance, camera, rng, supersample=s)

    gt = _ground_truth(cond, lay, objects, part_map, silhouette_px, thing_map, surf, shadow, sky_now, camera, l_refl, lit_windows, size)
    # Re-index the thing layer to annotated-object order.
    remap = np.full(len(objects) + 2, -2, dtype=np.int16)
    remap[1] = -1  # bare ground / sky (thing_map == -1)
    for new, old in enumerate(gt.pop("_kept")):
        remap[old + 2] = new
    thing_layer = remap[thing_map + 2]
    return SceneRender(image, gt, temp, eps, surf, thing_layer, hot_map & (thing_layer >= 0), shadow, s)


def _ground_truth(cond, lay, objects, part_map, silhouette_px, thing_map, surf, shadow, sky_now, camera, l_refl, lit_windows, size) -> dict[str, Any]:
    s = SUPERSAMPLE
    l_amb = float(R.band_radiance(cond.ambient_k))
    n_px = thing_map.size
    kept: list[int] = []
    annotated: list[dict[str, Any]] = []
    unannotated = 0
    for idx, th in enumerate(objects):
        vis = thing_map == idx
        count = int(vis.sum())
        if count / (s * s) < MIN_VISIBLE_PX:
            unannotated += 1
            continue
        rows, cols = np.nonzero(vis)
        box = _box(rows, cols)
        temps, weights, emis = [], [], []
        parts_gt = []
        hot_rows: list[np.ndarray] = []
        hot_cols: list[np.ndarray] = []
        shown = part_map[rows, cols]
        for pi, p in enumerate(th.parts):
            region = shown == pi
            pv = int(region.sum())
            if pv:
                temps.append(p.temperature_k)
                emis.append(p.emissivity)
                weights.append(pv)
                if th.hotspot == p.name:
                    hot_rows.append(rows[region])
                    hot_cols.append(cols[region])
        seen = {}
        for p in th.parts:
            if p.name not in seen:
                seen[p.name] = {"name": p.name, "temperature_k": round(p.temperature_k, 3), "emissivity": round(p.emissivity, 4)}
        parts_gt = list(seen.values())
        w = np.array(weights, dtype=float)
        t_mean = float(np.dot(w, temps) / w.sum()) if len(w) else float(np.mean([p.temperature_k for p in th.parts]))
        e_mean = float(np.dot(w, emis) / w.sum()) if len(w) else float(np.mean([p.emissivity for p in th.parts]))
        under = lay.surfaces[th.info["surface"]]
        tau = float(np.exp(-cond.extinction_per_km * 1e-3 * th.distance))

        def at_sensor(l_surface: float) -> float:
            return float(R.radiance_temperature(tau * l_surface + (1 - tau) * l_amb))

        l_under = under.emissivity * R.band_radiance(under.temperature_k) + (1 - under.emissivity) * l_refl[0]
        if th.hotspot == "all":
            l_obj = sum(wi * (e * R.band_radiance(t) + (1 - e) * l_refl[1]) for wi, t, e in zip(w, temps, emis)) / max(w.sum(), 1)
            hotspot_box = box
        elif th.hotspot is not None and hot_rows:
            hp = next(p for p in th.parts if p.name == th.hotspot)
            l_obj = hp.emissivity * R.band_radiance(hp.temperature_k) + (1 - hp.emissivity) * l_refl[hp.reflect]
            hotspot_box = _box(np.concatenate(hot_rows), np.concatenate(hot_cols))
        else:
            # No hotspot part, or it is out of sight (behind a tree, outside the frame): the
            # camera sees the object's visible mean.
            l_obj = e_mean * R.band_radiance(t_mean) + (1 - e_mean) * l_refl[1]
            hotspot_box = None
        contrast = at_sensor(l_obj) - at_sensor(l_under)
        kept.append(idx)
        annotated.append({
            "label": th.kind,
            "box": box,
            "state": th.info["state"],
            "temperature_k": round(t_mean, 3),
            "max_temperature_k": round(max(temps) if temps else max(p.temperature_k for p in th.parts), 3),
            "emissivity": round(e_mean, 4),
            "hot": bool(contrast >= HOT_CONTRAST_K),
            "contrast_k": round(contrast, 3),
            "hotspot_box": hotspot_box,
            "surface": under.kind,
            "surface_index": int(th.info["surface"]),
            "visible_fraction": round(count / max(silhouette_px.get(idx, count), 1), 4),
            "distance_m": round(th.distance, 2),
            "heading_deg": round(th.info["heading_deg"], 1),
            "parts": parts_gt,
        })
    ground_vis = (thing_map == -1) & ~sky_now
    surfaces = []
    for i, sf in enumerate(lay.surfaces):
        d = sf.to_dict()
        area = int(((surf == i) & ground_vis).sum())
        d["area_fraction"] = round(area / n_px, 5)
        d["shaded_fraction"] = round(int(((surf == i) & ground_vis & shadow).sum()) / max(area, 1), 4)
        surfaces.append(d)
    meta = cond.to_meta()
    zen = cond.sky_zenith_k
    meta["sky"] = {
        "visible": bool(sky_now.any()),
        "area_fraction": round(int(sky_now.sum()) / n_px, 5),
        "zenith_k": round(zen, 3),
        "emissivity_zenith": round(float(R.band_radiance(zen) / R.band_radiance(cond.ambient_k)), 4),
        "downwelling_k": round(float(R.radiance_temperature(l_refl[0])), 3),
    }
    meta["surfaces"] = surfaces
    meta["structures"] = {"buildings": len(lay.buildings), "trees": len(lay.trees), "lit_windows": int(lit_windows)}
    meta["camera"] = camera.to_dict()
    meta["unannotated_objects"] = unannotated
    return {
        "width": size,
        "height": size,
        "objects": annotated,
        "meta": meta,
        "radiometric": dict(R.CALIBRATION),
        "netd_k": round(camera.netd_k, 6),
        "generator": dict(GENERATOR),
        "_kept": kept,
    }


def _box(rows: np.ndarray, cols: np.ndarray) -> list[float]:
    """Bounding box [x, y, w, h] in output pixels of high-resolution pixel indices."""
    s = SUPERSAMPLE
    x0, x1 = cols.min() / s, (cols.max() + 1) / s
    y0, y1 = rows.min() / s, (rows.max() + 1) / s
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
