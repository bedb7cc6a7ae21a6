"""Measure a thermal image and its object boxes: the numbers every IR-Cap fact is derived from.

Input is one thermal image as float32 ``(H, W)``, white-hot, normalised the way
:func:`thermgen.io.read_thermal` does by default (``norm="fixed"``: counts divided by the dtype's
full range, so values are in ``[0, 1]`` and absolute levels survive). Output is a plain
JSON-serialisable dict, stored verbatim in the manifest's ``measurements`` field, so that every
caption can be traced back to the pixels.

Units
-----
``u`` (normalised units): the image value itself, in ``[0, 1]``.
``spread``: the robust dynamic range of the image, ``p95 - p5`` in ``u``. Object contrasts are
    divided by it (``*_rel`` keys) so that the rules in :mod:`thermgen.ircap.facts` work the same on
    8-bit AGC frames (whose gain changes from frame to frame) and on radiometric 16-bit frames.
kelvin: only when the sample carries a radiometric calibration (``T = offset + count * gain``);
    keys ending in ``_k`` are then present, otherwise absent (never guessed).

Per image (``measurements["image"]``)
    ``p1 p5 p25 p50 p75 p95 p99 mean`` (u), ``spread`` (p95-p5, u), ``iqr`` (u),
    ``hot_fraction`` / ``cold_fraction``: share of pixels more than ``HOT_COLD_SIGMA`` robust sigmas
    above / below the median; ``top_band`` / ``bottom_band``: median and robust sigma of the top and
    bottom eighth of the frame (the sky, when visible, is in the top band of an oblique view);
    ``*_k`` versions of the percentiles when radiometric.

Per object (``measurements["objects"][i]``, same order as the sample's boxes)
    ``box`` (clipped, px), ``area_frac`` (box area / frame area), ``center`` (x, y in [0, 1] of the
    frame), ``cell`` (3x3 grid name, e.g. ``"upper left"``);
    ``bg``: median of a ring of background around the box (other boxes excluded), ``bg_sigma``
    (1.4826 * MAD of the ring), ``ring_px`` (pixels in the ring);
    ``in_median in_p10 in_p90 in_p98`` inside the box;
    ``contrast_rel``  = (in_median - bg) / spread,
    ``hi_rel`` = (in_p90 - bg) / spread, ``lo_rel`` = (in_p10 - bg) / spread,
    ``top_rel`` = (in_p98 - bg) / spread and ``top_z`` = (in_p98 - bg) / bg_sigma (the hottest
    part of the box against the background, in spread units and in background-noise units);
    ``peak_rel`` = (in_p98 - in_median) / spread  (how concentrated the hottest part is);
    ``hotspot``: centroid of the hottest 10 % of box pixels in box coordinates (u, v in [0, 1],
    0,0 = top-left of the box) and ``hotspot_offset`` (distance of that centroid from the box centre,
    in half-box units: 0 = centre, 1 = at the edge);
    ``*_k`` kelvin versions when radiometric.
A value that cannot be measured (box outside the frame, ring too small) is ``None``: the fact
rules treat ``None`` as undecidable and state nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Pixels more than this many robust sigmas from the median count as hot / cold.
HOT_COLD_SIGMA = 2.0
#: Ring width around a box, as a fraction of the box's shorter side (at least ``RING_MIN_PX``).
RING_FRAC = 0.5
RING_MIN_PX = 3
#: A ring with fewer background pixels than this is not a usable reference.
RING_MIN_COUNT = 12
#: Share of a box's pixels that make up its "hot spot".
HOTSPOT_SHARE = 0.10

_CELL_ROWS = ("upper", "middle", "lower")
_CELL_COLS = ("left", "centre", "right")


def grid_cell(cx: float, cy: float) -> str:
    """Name of the 3x3 cell holding a point; ``cx, cy`` in [0, 1] of the frame (x right, y down)."""
    col = _CELL_COLS[min(2, max(0, int(cx * 3)))]
    row = _CELL_ROWS[min(2, max(0, int(cy * 3)))]
    if row == "middle" and col == "centre":
        return "centre"
    if row == "middle":
        return f"middle {col}"
    if col == "centre":
        return f"{row} centre"
    return f"{row} {col}"


def _robust_sigma(x: np.ndarray) -> float:
    med = np.median(x)
    return float(1.4826 * np.median(np.abs(x - med)))


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(float(v), nd)


def measure_image(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]] = (),
    kelvin_per_unit: float | None = None,
    kelvin_offset: float | None = None,
) -> dict[str, Any]:
    """Measure one image and its boxes.

    Args:
        image: float array ``(H, W)``, white-hot, normalised units (``read_thermal(norm="fixed")``).
        boxes: ``[x, y, w, h]`` in pixels, top-left origin, one per object.
        kelvin_per_unit, kelvin_offset: radiometric calibration in the image's units
            (``T[K] = kelvin_offset + value * kelvin_per_unit``); both ``None`` when not radiometric.

    Returns:
        ``{"image": {...}, "objects": [{...}, ...], "radiometric": bool}``; see the module docstring.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"measure_image expects a non-empty (H, W) array, got shape {img.shape}")
    H, W = img.shape
    radiometric = kelvin_per_unit is not None and kelvin_offset is not None

    def to_k(v: float | None) -> float | None:
        return None if (v is None or not radiometric) else kelvin_offset + v * kelvin_per_unit

    # Subsample for whole-image percentiles: exact enough (error << 1 grey level) and 4x cheaper.
    flat = img[::2, ::2].ravel()
    qs = np.percentile(flat, [1, 5, 25, 50, 75, 95, 99])
    p1, p5, p25, p50, p75, p95, p99 = (float(q) for q in qs)
    spread = p95 - p5
    sigma = _robust_sigma(flat)
    thr = HOT_COLD_SIGMA * max(sigma, 1e-6)
    band = max(1, H // 8)
    top, bottom = img[:band], img[H - band :]
    stats: dict[str, Any] = {
        "p1": p1, "p5": p5, "p25": p25, "p50": p50, "p75": p75, "p95": p95, "p99": p99,
        "mean": float(flat.mean()), "spread": spread, "iqr": p75 - p25, "sigma": sigma,
        "hot_fraction": float(np.mean(flat > p50 + thr)),
        "cold_fraction": float(np.mean(flat < p50 - thr)),
        "top_band": {"median": float(np.median(top)), "sigma": _robust_sigma(top.ravel())},
        "bottom_band": {"median": float(np.median(bottom)), "sigma": _robust_sigma(bottom.ravel())},
    }
    if radiometric:
        for k in ("p1", "p5", "p50", "p95", "p99"):
            stats[f"{k}_k"] = to_k(stats[k])
        stats["spread_k"] = spread * kelvin_per_unit
        stats["top_band"]["median_k"] = to_k(stats["top_band"]["median"])
        stats["top_band"]["sigma_k"] = stats["top_band"]["sigma"] * kelvin_per_unit
    stats = {k: (_r(v) if isinstance(v, float) else {kk: _r(vv) for kk, vv in v.items()}) for k, v in stats.items()}

    # Ring pixels must be background: mask every box once, then exclude it from every ring.
    covered = np.zeros((H, W), dtype=bool)
    clipped: list[tuple[int, int, int, int] | None] = []
    for b in boxes:
        x, y, w, h = (float(v) for v in b)
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(W, int(np.ceil(x + w))), min(H, int(np.ceil(y + h)))
        if x1 - x0 < 1 or y1 - y0 < 1:
            clipped.append(None)
            continue
        clipped.append((x0, y0, x1, y1))
        covered[y0:y1, x0:x1] = True

    denom = max(spread, 1e-6)
    objects = []
    for b, cb in zip(boxes, clipped):
        if cb is None:
            objects.append({"box": [float(v) for v in b], "measurable": False})
            continue
        x0, y0, x1, y1 = cb
        bw, bh = x1 - x0, y1 - y0
        m = max(RING_MIN_PX, int(round(RING_FRAC * min(bw, bh))))
        rx0, ry0, rx1, ry1 = max(0, x0 - m), max(0, y0 - m), min(W, x1 + m), min(H, y1 + m)
        ring = img[ry0:ry1, rx0:rx1][~covered[ry0:ry1, rx0:rx1]]
        inside = img[y0:y1, x0:x1]
        ivals = inside.ravel()
        i10, i50, i90, i98 = (float(q) for q in np.percentile(ivals, [10, 50, 90, 98]))
        cx, cy = (x0 + x1) / 2 / W, (y0 + y1) / 2 / H
        # Hot spot: centroid of the hottest HOTSPOT_SHARE of the box's pixels.
        cut = i90 if HOTSPOT_SHARE == 0.10 else np.percentile(ivals, 100 * (1 - HOTSPOT_SHARE))
        ys, xs = np.nonzero(inside >= cut)
        hu = float((xs.mean() + 0.5) / bw)
        hv = float((ys.mean() + 0.5) / bh)
        obj: dict[str, Any] = {
            "box": [x0, y0, bw, bh],
            "measurable": True,
            "area_frac": _r(bw * bh / (W * H), 6),
            "center": [_r(cx), _r(cy)],
            "cell": grid_cell(cx, cy),
            "in_median": _r(i50), "in_p10": _r(i10), "in_p90": _r(i90), "in_p98": _r(i98),
            "peak_rel": _r((i98 - i50) / denom),
            "hotspot": [_r(hu, 3), _r(hv, 3)],
            "hotspot_offset": _r(2 * max(abs(hu - 0.5), abs(hv - 0.5)), 3),
            "ring_px": int(ring.size),
        }
        if ring.size >= RING_MIN_COUNT:
            bg = float(np.median(ring))
            bg_sigma = float(1.4826 * np.median(np.abs(ring - bg)))
            obj.update(
                bg=_r(bg), bg_sigma=_r(bg_sigma),
                contrast_rel=_r((i50 - bg) / denom), hi_rel=_r((i90 - bg) / denom), lo_rel=_r((i10 - bg) / denom),
                top_rel=_r((i98 - bg) / denom), top_z=_r((i98 - bg) / max(bg_sigma, 1e-3), 2),
            )
            if radiometric:
                obj.update(bg_k=_r(to_k(bg), 3), in_median_k=_r(to_k(i50), 3), in_p98_k=_r(to_k(i98), 3),
                           contrast_k=_r((i50 - bg) * kelvin_per_unit, 3), hi_k=_r((i90 - bg) * kelvin_per_unit, 3),
                           top_k=_r((i98 - bg) * kelvin_per_unit, 3))
        else:
            # Not enough background around the box (e.g. a crowd): no reference, so no contrast.
            obj.update(bg=None, bg_sigma=None, contrast_rel=None, hi_rel=None, lo_rel=None, top_rel=None, top_z=None)
        objects.append(obj)
    return {"image": stats, "objects": objects, "radiometric": bool(radiometric)}
