"""IR-Cap measurements: contrasts against a background ring, hot spots, positions, kelvin."""

import numpy as np
import pytest

from thermgen.ircap.measure import grid_cell, measure_image


def _scene(bg=0.4, size=(120, 160), seed=0):
    rng = np.random.default_rng(seed)
    img = np.full(size, bg, np.float32) + rng.normal(0, 0.005, size).astype(np.float32)
    # A gradient elsewhere so the image has a spread to normalise by.
    img[:, :20] = np.linspace(0.1, 0.9, size[0])[:, None]
    return img


def test_warm_object_has_positive_contrast_and_cold_object_negative():
    img = _scene()
    img[40:60, 60:80] = 0.7
    img[40:60, 110:130] = 0.2
    m = measure_image(img, [[60, 40, 20, 20], [110, 40, 20, 20]])
    warm, cold = m["objects"]
    assert warm["contrast_rel"] > 0.3 and warm["bg"] == pytest.approx(0.4, abs=0.01)
    assert cold["contrast_rel"] < -0.2


def test_hot_spot_centroid_lies_where_the_hot_pixels_are():
    img = _scene()
    img[40:60, 60:90] = 0.45
    img[55:60, 62:88] = 0.9  # hot band at the bottom of the box (tyres, undercarriage)
    (o,) = measure_image(img, [[60, 40, 30, 20]])["objects"]
    u, v = o["hotspot"]
    assert v > 0.8 and 0.3 < u < 0.7
    assert o["hotspot_offset"] > 0.6
    assert o["peak_rel"] > 0.5


def test_ring_ignores_neighbouring_boxes():
    img = _scene()
    img[40:60, 60:80] = 0.5
    img[40:60, 80:100] = 1.0  # a hot neighbour touching the box
    alone = measure_image(img, [[60, 40, 20, 20]])["objects"][0]
    both = measure_image(img, [[60, 40, 20, 20], [80, 40, 20, 20]])["objects"][0]
    assert both["bg"] == pytest.approx(0.4, abs=0.01)
    assert alone["bg"] >= both["bg"]


def test_box_outside_the_frame_is_not_measurable():
    m = measure_image(_scene(), [[500, 500, 10, 10]])
    assert m["objects"][0]["measurable"] is False


def test_surrounded_box_has_no_contrast_when_the_ring_is_covered():
    img = _scene()
    boxes = [[60, 40, 20, 20]] + [[60 + dx, 40 + dy, 20, 20] for dx in (-20, 0, 20) for dy in (-20, 0, 20) if (dx, dy) != (0, 0)]
    o = measure_image(img, boxes)["objects"][0]
    assert o["ring_px"] < 12 and o["contrast_rel"] is None


def test_kelvin_keys_only_when_radiometric():
    img = _scene()
    img[40:60, 60:80] = 0.5
    plain = measure_image(img, [[60, 40, 20, 20]])
    assert "contrast_k" not in plain["objects"][0] and "p50_k" not in plain["image"]
    rad = measure_image(img, [[60, 40, 20, 20]], kelvin_per_unit=100.0, kelvin_offset=250.0)
    o = rad["objects"][0]
    assert o["contrast_k"] == pytest.approx(10.0, abs=0.5)  # 0.1 units * 100 K/unit
    assert o["bg_k"] == pytest.approx(290.0, abs=0.5)
    assert rad["radiometric"] is True


def test_image_statistics_and_hot_fraction():
    img = np.full((64, 64), 0.3, np.float32) + np.random.default_rng(0).normal(0, 0.01, (64, 64)).astype(np.float32)
    img[:16, :16] = 0.9
    st = measure_image(img)["image"]
    assert st["p50"] == pytest.approx(0.3, abs=0.01)
    assert st["hot_fraction"] == pytest.approx(16 * 16 / 64 / 64, abs=0.02)
    assert st["cold_fraction"] < 0.02


def test_grid_cells_name_the_nine_regions():
    assert grid_cell(0.1, 0.1) == "upper left"
    assert grid_cell(0.5, 0.5) == "centre"
    assert grid_cell(0.9, 0.5) == "middle right"
    assert grid_cell(0.5, 0.95) == "lower centre"


def test_non_2d_input_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        measure_image(np.zeros((4, 4, 3), np.float32))
