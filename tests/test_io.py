"""thermgen.io: reading, normalising, writing thermal images."""

import numpy as np
import pytest
from PIL import Image

from thermgen.data.sample import DataError
from thermgen.io import (
    flip_polarity,
    image_size,
    normalize,
    percentile_stretch,
    read_raw,
    read_thermal,
    to_rgb3,
    write_png8,
    write_png16,
)


def _full_range_u16() -> np.ndarray:
    # Every 16-bit level exactly once (incl. 0, 1, odd values, 65534, 65535), shuffled so that
    # neighbouring pixels differ (no filter-friendly ramp).
    a = np.arange(65536, dtype=np.uint16)
    np.random.default_rng(0).shuffle(a)
    return a.reshape(256, 256)


# --- writing -------------------------------------------------------------------------------------


def test_png16_round_trip_is_lossless_over_the_full_range(tmp_path):
    a = _full_range_u16()
    path = write_png16(tmp_path / "sub" / "a.png", a)
    back = read_raw(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, a)


def test_png16_file_is_a_16bit_greyscale_png(tmp_path):
    path = write_png16(tmp_path / "a.png", _full_range_u16())
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode.startswith("I;16")


def test_png16_accepts_big_endian_input(tmp_path):
    a = _full_range_u16()
    np.testing.assert_array_equal(read_raw(write_png16(tmp_path / "a.png", a.astype(">u2"))), a)


def test_png16_rejects_values_beyond_16_bits(tmp_path):
    with pytest.raises(ValueError, match="outside uint16"):
        write_png16(tmp_path / "a.png", np.array([[0, 70000]], dtype=np.int32))


def test_png16_quantises_float_in_unit_range_by_rounding(tmp_path):
    f = np.array([[0.0, 1.0, 0.5, 1 / 65535]], dtype=np.float64)
    back = read_raw(write_png16(tmp_path / "a.png", f))
    np.testing.assert_array_equal(back, [[0, 65535, 32768, 1]])


def test_png16_rejects_float_outside_unit_range(tmp_path):
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        write_png16(tmp_path / "a.png", np.array([[0.0, 1.5]]))


def test_png8_round_trip_is_lossless_grey_and_rgb(tmp_path):
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(read_raw(write_png8(tmp_path / "g.png", g)), g)
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with Image.open(write_png8(tmp_path / "c.png", rgb)) as im:
        np.testing.assert_array_equal(np.asarray(im), rgb)


# --- normalisation -------------------------------------------------------------------------------


def test_fixed_norm_divides_8bit_by_255():
    out = normalize(np.array([[0, 51, 255]], dtype=np.uint8), "fixed")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-7)


def test_fixed_norm_divides_16bit_by_65535():
    out = normalize(np.array([[0, 13107, 65535]], dtype=np.uint16), "fixed")
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-7)


def test_fixed_norm_with_bit_depth_uses_that_range():
    out = normalize(np.array([[0, 16383]], dtype=np.uint16), "fixed", bit_depth=14)
    np.testing.assert_allclose(out, [[0.0, 1.0]])
    with pytest.raises(DataError, match="14-bit range"):
        normalize(np.array([[20000]], dtype=np.uint16), "fixed", bit_depth=14)


def test_fixed_norm_keeps_absolute_level_where_percentile_erases_it():
    rng = np.random.default_rng(0)
    night = rng.integers(20, 60, (32, 32)).astype(np.uint8)
    day = night + 120
    assert read_thermal(night).mean() < read_thermal(day).mean() - 0.4
    p_night, p_day = read_thermal(night, "percentile"), read_thermal(day, "percentile")
    np.testing.assert_allclose(p_night, p_day, atol=1e-6)


def test_fixed_norm_rejects_float_data_outside_unit_range():
    with pytest.raises(DataError, match="outside \\[0, 1\\].*percentile"):
        normalize(np.array([[280.0, 300.0]], dtype=np.float32), "fixed")


def test_percentile_stretch_maps_the_percentiles_to_0_and_1():
    a = np.arange(101, dtype=np.float32).reshape(1, 101)  # percentile p has value p
    out = percentile_stretch(a, (10, 90))
    assert out[0, 10] == pytest.approx(0.0) and out[0, 90] == pytest.approx(1.0)
    assert out[0, 50] == pytest.approx(0.5)
    assert out[0, 0] == 0.0 and out[0, 100] == 1.0  # clipped outside the window


def test_percentile_stretch_of_a_flat_image_is_zero():
    np.testing.assert_array_equal(percentile_stretch(np.full((4, 4), 7, np.uint16)), 0.0)


def test_temperature_norm_applies_the_calibration_and_window():
    counts = np.array([[2000, 3000, 4000]], dtype=np.uint16)
    cal = {"kelvin_per_count": 0.01, "kelvin_offset": 250.0}  # 270 K, 280 K, 290 K
    out = read_thermal(counts, "temperature", radiometric=cal, temperature_range_k=(270.0, 290.0))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]], atol=1e-6)


def test_temperature_norm_reads_float_arrays_as_kelvin_and_clips():
    kelvin = np.array([[260.0, 300.0, 340.0]], dtype=np.float32)
    np.testing.assert_allclose(read_thermal(kelvin, "temperature", temperature_range_k=(280, 320)), [[0.0, 0.5, 1.0]])


def test_temperature_norm_of_uncalibrated_counts_is_an_error(tmp_path):
    path = write_png16(tmp_path / "c.png", np.ones((4, 4), np.uint16))
    with pytest.raises(DataError, match=f"{path}.*radiometric"):
        read_thermal(path, "temperature")


def test_none_norm_returns_raw_values_as_float32(tmp_path):
    path = write_png16(tmp_path / "c.png", np.array([[0, 40000]], np.uint16))
    out = read_thermal(path, "none")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.0, 40000.0]])


def test_flip_polarity_known_values():
    np.testing.assert_array_equal(flip_polarity(np.array([0, 1, 255], np.uint8)), [255, 254, 0])
    np.testing.assert_array_equal(flip_polarity(np.array([0, 65535], np.uint16)), [65535, 0])
    np.testing.assert_allclose(flip_polarity(np.array([0.0, 0.25], np.float32)), [1.0, 0.75])


def test_black_hot_file_is_read_as_white_hot(tmp_path):
    white_hot = np.array([[10, 200]], np.uint8)
    path = write_png8(tmp_path / "bh.png", 255 - white_hot)
    np.testing.assert_allclose(read_thermal(path, polarity="black-hot"), white_hot / 255.0, atol=1e-7)


# --- formats -------------------------------------------------------------------------------------


def test_reads_16bit_tiff_losslessly(tmp_path):
    a = _full_range_u16()
    Image.fromarray(a).save(tmp_path / "a.tif")
    np.testing.assert_array_equal(read_raw(tmp_path / "a.tif"), a)
    np.testing.assert_allclose(read_thermal(tmp_path / "a.tif"), a / 65535.0, atol=1e-7)


def test_reads_float32_tiff_as_float(tmp_path):
    f = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(f).save(tmp_path / "f.tif")
    out = read_thermal(tmp_path / "f.tif")
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_allclose(out, f)


def test_reads_8bit_grey_jpeg(tmp_path):
    g = np.full((16, 16), 128, np.uint8)
    Image.fromarray(g).save(tmp_path / "g.jpg", quality=95)
    out = read_thermal(tmp_path / "g.jpg")
    assert out.shape == (16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, 128 / 255.0, atol=1 / 255.0)


def test_reads_npy_counts_and_kelvin(tmp_path):
    counts = np.array([[0, 65535]], np.uint16)
    np.save(tmp_path / "c.npy", counts)
    np.testing.assert_allclose(read_thermal(tmp_path / "c.npy"), [[0.0, 1.0]])
    np.save(tmp_path / "k.npy", np.array([[273.15, 293.15]], np.float32))
    np.testing.assert_allclose(read_thermal(tmp_path / "k.npy", "temperature", temperature_range_k=(273.15, 313.15)), [[0.0, 0.5]], atol=1e-6)


def test_npy_that_is_not_an_image_is_an_error_naming_the_file(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((2, 3, 5, 7)))
    with pytest.raises(DataError, match=f"{tmp_path / 'v.npy'}.*not an image"):
        read_thermal(tmp_path / "v.npy")


def test_equal_channel_rgb_png_is_accepted_as_grey(tmp_path):
    g = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_raw(tmp_path / "rgb.png"), g)


def test_equal_channel_rgb_jpeg_is_accepted_as_grey(tmp_path):
    # LLVIP stores its infrared frames as 3-channel JPEGs.
    g = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "ir.jpg", quality=90)
    out = read_raw(tmp_path / "ir.jpg")
    assert out.shape == (32, 32) and out.dtype == np.uint8


def test_true_colour_image_is_an_error_naming_the_file(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    with pytest.raises(DataError, match=f"{tmp_path / 'red.png'}: true colour"):
        read_thermal(tmp_path / "red.png")


def test_true_colour_image_converts_to_luma_when_asked(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "red.png")
    np.testing.assert_array_equal(read_raw(tmp_path / "red.png", color="luma"), 76)  # 0.299 * 255


def test_missing_file_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.png'}: no such file"):
        read_thermal(tmp_path / "nope.png")


def test_empty_file_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=f"{tmp_path / 'empty.png'}: empty file"):
        read_thermal(tmp_path / "empty.png")


def test_non_image_file_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"this is not an image at all")
    with pytest.raises(DataError, match=f"{tmp_path / 'x.png'}: not a readable image"):
        read_thermal(tmp_path / "x.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_truncated_file_is_an_error_naming_the_file(tmp_path, suffix):
    g = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    full = tmp_path / f"full{suffix}"
    Image.fromarray(g).save(full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{cut}: truncated or corrupt"):
        read_thermal(cut)


def test_image_size_reads_the_header_only(tmp_path):
    g = np.random.default_rng(0).integers(0, 256, (48, 64), dtype=np.uint8)
    full = tmp_path / "full.png"
    Image.fromarray(g).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert image_size(cut) == (64, 48)  # pixels not decoded, so truncation does not matter here
    np.save(tmp_path / "a.npy", np.zeros((5, 7), np.uint16))
    assert image_size(tmp_path / "a.npy") == (7, 5)


def test_read_thermal_returns_float32_hw_in_unit_range_for_hit_uav(hit_uav_root):
    path = next((hit_uav_root / "normal_json" / "val").glob("*.jpg"))
    out = read_thermal(path)
    assert out.shape == (512, 640) and out.dtype == np.float32
    assert 0.0 <= out.min() < out.max() <= 1.0


# --- channels ------------------------------------------------------------------------------------


def test_to_rgb3_replicates_numpy_channels_last_and_first():
    g = np.arange(6, dtype=np.float32).reshape(2, 3)
    rgb = to_rgb3(g)
    assert rgb.shape == (2, 3, 3)
    for k in range(3):
        np.testing.assert_array_equal(rgb[..., k], g)
    assert to_rgb3(g, channels_first=True).shape == (3, 2, 3)


def test_to_rgb3_replicates_torch_batches():
    torch = pytest.importorskip("torch")
    x = torch.rand(2, 1, 4, 5)
    y = to_rgb3(x)
    assert y.shape == (2, 3, 4, 5)
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, 2], x[:, 0])
