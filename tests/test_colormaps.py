"""thermgen.io colormaps: known values, monotone brightness, input handling."""

import numpy as np
import pytest

from thermgen.io import COLORMAPS, IRONBOW_POINTS, apply_colormap, colormap_lut


def _luminance(lut: np.ndarray) -> np.ndarray:
    return lut.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


def test_every_named_colormap_is_a_256_entry_uint8_rgb_table():
    for name in COLORMAPS:
        lut = colormap_lut(name)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8, name


def test_white_hot_is_grey_with_hot_white():
    out = apply_colormap(np.array([[0.0, 0.5, 1.0]]), "white-hot")
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [128, 128, 128], [255, 255, 255]])


def test_black_hot_is_grey_with_hot_black():
    out = apply_colormap(np.array([[0.0, 1.0]]), "black-hot")
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [0, 0, 0]])


def test_ironbow_passes_through_its_control_points():
    for pos, rgb in IRONBOW_POINTS:
        got = apply_colormap(np.array([[pos]]), "ironbow")[0, 0].astype(int)
        # index round(pos * 255) can sit half an index off the control point; the steepest
        # segment (0.9 -> 1.0, blue 40 -> 255) moves 8.4 levels per index.
        assert np.abs(got - np.array(rgb)).max() <= 5, (pos, got, rgb)


def test_ironbow_runs_black_to_white():
    np.testing.assert_array_equal(colormap_lut("ironbow")[0], [0, 0, 0])
    np.testing.assert_array_equal(colormap_lut("ironbow")[255], [255, 255, 255])


def test_inferno_matches_the_published_endpoints():
    # matplotlib's inferno: first entry (0.0015, 0.0005, 0.0139), last (0.9884, 0.9984, 0.6449)
    np.testing.assert_array_equal(colormap_lut("inferno")[0], [0, 0, 4])
    np.testing.assert_array_equal(colormap_lut("inferno")[255], [252, 255, 164])


@pytest.mark.parametrize("name", ["white-hot", "ironbow"])
def test_hotter_is_never_darker(name):
    assert np.all(np.diff(_luminance(colormap_lut(name))) >= 0)


def test_inferno_brightness_rises_up_to_8bit_rounding():
    # inferno is monotone in perceptual lightness; in 8-bit sRGB luminance rounding leaves dips
    # of a fraction of a level.
    lum = _luminance(colormap_lut("inferno"))
    assert np.all(np.diff(lum) > -0.5) and lum[-1] - lum[0] > 240


def test_black_hot_hotter_is_never_brighter():
    assert np.all(np.diff(_luminance(colormap_lut("black-hot"))) <= 0)


def test_integer_input_uses_its_full_range():
    u8 = apply_colormap(np.array([[255]], np.uint8), "white-hot")
    u16 = apply_colormap(np.array([[65535, 32768]], np.uint16), "white-hot")
    np.testing.assert_array_equal(u8[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(u16[0], [[255, 255, 255], [128, 128, 128]])


def test_window_is_applied_and_values_outside_are_clipped():
    out = apply_colormap(np.array([[270.0, 280.0, 290.0, 400.0]]), "white-hot", vmin=270, vmax=290)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255, 255])


def test_output_is_uint8_rgb_of_the_input_size():
    out = apply_colormap(np.zeros((5, 7), np.float32), "ironbow")
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8


def test_aliases_and_matplotlib_names_work():
    np.testing.assert_array_equal(colormap_lut("grey"), colormap_lut("white-hot"))
    np.testing.assert_array_equal(colormap_lut("iron"), colormap_lut("ironbow"))
    assert colormap_lut("twilight").shape == (256, 3)


def test_unknown_colormap_is_an_error_listing_the_names():
    with pytest.raises(ValueError, match="unknown colormap 'hotpink'.*ironbow"):
        apply_colormap(np.zeros((2, 2)), "hotpink")


def test_multichannel_input_is_rejected():
    with pytest.raises(ValueError, match=r"single-channel"):
        apply_colormap(np.zeros((2, 2, 3)), "ironbow")
