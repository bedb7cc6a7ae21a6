"""Synthetic thermal scenes: determinism, physics seen in the pixels, the dataset format and its loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from thermgen.data.sample import DataError, SkipReport
from thermgen.data.synthetic import (
    CALIBRATION,
    LABELS,
    band_radiance,
    counts_to_kelvin,
    generate,
    load,
    radiance_temperature,
    render_scene,
    render_scene_layers,
    split_counts,
)
from thermgen.data.synthetic.radiometry import planck_band_radiance
from thermgen.io import read_thermal

# Many seeds, small images: 64, 80 and 96 px in turn.
SEEDS = range(60)


def _size(seed: int) -> int:
    return 64 + (seed % 3) * 16


@pytest.fixture(scope="module")
def scenes():
    return [render_scene_layers(seed, _size(seed)) for seed in SEEDS]


@pytest.fixture(scope="module")
def night_scenes():
    return [render_scene_layers(1000 + seed, _size(seed), time_of_day="night", scene="playground") for seed in range(30)]


@pytest.fixture(scope="module")
def parking_scenes():
    # Car parks: many cars, a third of them just parked with a warm hood.
    return [render_scene_layers(500 + seed, 96, scene="parking") for seed in range(20)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "ds", n=12, size=48, seed=5, progress=False)


# --- helpers: pixel statistics at output resolution -----------------------------------------

def _blocks(layer: np.ndarray, s: int, how: str) -> np.ndarray:
    h = layer.shape[0] // s
    return getattr(layer.reshape(h, s, h, s), how)(axis=(1, 3))


def _near(box, m: int, shape) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    x, y, w, h = box
    return (xx >= np.floor(x) - m) & (xx < np.ceil(x + w) + m) & (yy >= np.floor(y) - m) & (yy < np.ceil(y + h) + m)


def _ring(r, obj, gap: int = 1, width: int = 3) -> np.ndarray:
    """Background ring around an object's box: pixels 1-4 px outside it, entirely bare ground of
    the surface the object stands on, not in shade and not near any annotated box."""
    s, shape = r.supersample, r.image.shape
    bare = _blocks((r.surface == obj["surface_index"]) & (r.thing == -1) & ~r.shadow, s, "all")
    ring = _near(obj["box"], gap + width, shape) & ~_near(obj["box"], gap, shape) & bare
    for other in r.gt["objects"]:
        ring &= ~_near(other["box"], gap, shape)
    return ring


def _kelvin(r) -> np.ndarray:
    return counts_to_kelvin(r.image)


# --- radiometry -------------------------------------------------------------------------------

def test_band_radiance_table_matches_direct_planck_integration():
    t = np.array([230.0, 273.15, 300.0, 345.6])
    np.testing.assert_allclose(band_radiance(t), planck_band_radiance(t), rtol=1e-4)
    # Over (almost) all wavelengths the integral is Stefan-Boltzmann's sigma T^4 / pi; the 8-14 um
    # window holds about 37.6 % of it at 300 K.
    sigma = 5.670374419e-8
    whole = planck_band_radiance(np.array([300.0]), (1.0, 1000.0), 400_000)[0]
    np.testing.assert_allclose(whole, sigma * 300.0**4 / np.pi, rtol=2e-3)
    assert 0.37 < float(band_radiance(300.0)) / (sigma * 300.0**4 / np.pi) < 0.38


def test_radiance_temperature_inverts_band_radiance():
    t = np.linspace(200.0, 400.0, 101)
    np.testing.assert_allclose(radiance_temperature(band_radiance(t)), t, atol=1e-3)


def test_counts_map_to_kelvin_with_the_stated_calibration():
    img, gt = render_scene(3, 32)
    assert gt["radiometric"] == CALIBRATION == {"kelvin_per_count": 0.002, "kelvin_offset": 220.0}
    np.testing.assert_allclose(counts_to_kelvin(np.array([0, 40000])), [220.0, 300.0])


# --- determinism ------------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_files(tmp_path):
    a = generate(tmp_path / "a", n=6, size=40, seed=11, progress=False)
    b = generate(tmp_path / "b", n=6, size=40, seed=11, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 6 + 3 + 1
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_different_seeds_give_different_scenes():
    a, _ = render_scene(1, 48)
    b, _ = render_scene(2, 48)
    assert not np.array_equal(a, b)


def test_scene_does_not_depend_on_worker_count(tmp_path):
    a = generate(tmp_path / "a", n=4, size=32, seed=2, progress=False, workers=1)
    b = generate(tmp_path / "b", n=4, size=32, seed=2, progress=False, workers=2)
    for p in a.rglob("*.png"):
        assert p.read_bytes() == (b / p.relative_to(a)).read_bytes()


# --- ground truth agrees with the pixels ------------------------------------------------------

def test_hot_objects_are_brighter_than_the_ground_around_them(scenes):
    checked = 0
    for r in scenes:
        img = _kelvin(r)
        for k, obj in enumerate(r.gt["objects"]):
            if not obj["hot"]:
                continue
            # The hot region: output pixels wholly covered by the object's hotspot part (a car's
            # engine hood, a whole person); needs two of them to be resolved beyond the optics blur.
            core = _blocks((r.thing == k) & r.hotspot, r.supersample, "all")
            ring = _ring(r, obj)
            if core.sum() < 2 or ring.sum() < 4:
                continue
            checked += 1
            assert img[core].mean() > img[ring].mean(), (r.gt["meta"], obj)
    assert checked >= 40


def test_running_cars_have_a_hot_engine_region(scenes):
    running = [o for r in scenes for o in r.gt["objects"] if o["label"] == "Car" and o["state"] == "running"]
    assert len(running) >= 10
    for o in running:
        hood = next(p for p in o["parts"] if p["name"] == "hood")
        body = next(p for p in o["parts"] if p["name"] == "body")
        assert hood["temperature_k"] >= body["temperature_k"] + 18
        # Hot as the camera sees it: unless the hood is out of sight (outside the frame, behind
        # the cabin in a low view from behind, behind another thing).
        assert o["hot"] or o["hotspot_box"] is None
    assert sum(o["hot"] for o in running) >= 0.8 * len(running)


def test_people_at_night_are_brighter_than_the_ground_around_them(night_scenes):
    checked = 0
    for r in night_scenes:
        img = _kelvin(r)
        assert r.gt["meta"]["ambient_k"] < 305.0  # below skin temperature
        for k, obj in enumerate(r.gt["objects"]):
            if obj["label"] != "Person":
                continue
            ring = _ring(r, obj)
            if ring.sum() < 4:
                continue
            checked += 1
            assert img[_near(obj["box"], 0, img.shape)].mean() > img[ring].mean(), obj
    assert checked >= 30


def test_cars_parked_for_hours_sit_within_a_small_contrast_of_their_surroundings(scenes):
    diffs = []
    for r in scenes:
        img = _kelvin(r)
        for obj in r.gt["objects"]:
            if obj["label"] == "Car" and obj["state"] == "parked_cold":
                ring = _ring(r, obj)
                if ring.sum() >= 4:
                    diffs.append(img[_near(obj["box"], 0, img.shape)].mean() - img[ring].mean())
    assert len(diffs) >= 10
    # Glass reflecting a cold sky makes them a little darker; never a hot spot.
    assert np.max(np.abs(diffs)) < 6.0
    assert np.median(np.abs(diffs)) < 1.5


def test_wet_surfaces_have_the_stated_emissivity():
    checked = 0
    for seed in range(8):
        r = render_scene_layers(200 + seed, 48, weather="rain")
        assert r.gt["meta"]["wet"]
        for i, sf in enumerate(r.gt["meta"]["surfaces"]):
            if sf["state"] != "wet":
                continue
            pix = r.emissivity[(r.surface == i)]
            if pix.size == 0:
                continue
            checked += 1
            assert 0.965 <= sf["emissivity"] <= 0.99
            np.testing.assert_allclose(pix, sf["emissivity"], atol=5e-5)
    assert checked >= 8


def test_ground_pixels_read_the_temperature_the_camera_model_predicts():
    # Independent restatement of the documented model for bare ground: per high-res pixel
    # L = tau * (eps L(T) + (1 - eps) L_down) + (1 - tau) L(T_a), times vignetting; averaged to
    # output pixels. Away from edges (blur) the mean pixel temperature must match within 0.2 K.
    from scipy.ndimage import binary_erosion

    checked = 0
    for seed in range(8):
        r = render_scene_layers(300 + seed, 64, view="nadir", n_objects=0)
        meta, s, n = r.gt["meta"], r.supersample, r.image.shape[0]
        l_down = band_radiance(meta["sky"]["downwelling_k"])
        l_amb = band_radiance(meta["ambient_k"])
        tau = np.exp(-meta["extinction_per_km"] * 1e-3 * meta["altitude_m"] / np.sin(np.radians(meta["view_angle_deg"])))
        eps, temp = r.emissivity, r.temperature_k
        lum = tau * (eps * band_radiance(temp) + (1 - eps) * l_down) + (1 - tau) * l_amb
        yy, xx = np.mgrid[0 : n * s, 0 : n * s]
        rho2 = (((yy + 0.5) / (n * s) - 0.5) ** 2 + ((xx + 0.5) / (n * s) - 0.5) ** 2) / 0.5
        lum = lum * (1 - meta["camera"]["vignetting"] * rho2)
        expect = radiance_temperature(_blocks(lum, s, "mean"))
        img = _kelvin(r)
        for i in range(len(meta["surfaces"])):
            region = binary_erosion(_blocks((r.surface == i) & (r.thing == -1), s, "all"), iterations=3)
            if region.sum() < 100:
                continue
            checked += 1
            assert abs(img[region].mean() - expect[region].mean()) < 0.2, (meta["surfaces"][i], meta["camera"])
    assert checked >= 6


def test_fixed_normalisation_keeps_night_darker_than_day():
    day = [read_counts.mean() for read_counts, _ in (render_scene(400 + s, 32, time_of_day="day", weather="clear") for s in range(10))]
    night = [c.mean() for c, _ in (render_scene(400 + s, 32, time_of_day="night", weather="clear") for s in range(10))]
    assert np.mean(night) < np.mean(day)


def test_boxes_lie_inside_the_image_and_cover_the_object_pixels(scenes):
    for r in scenes:
        n = r.image.shape[0]
        for k, obj in enumerate(r.gt["objects"]):
            x, y, w, h = obj["box"]
            assert obj["label"] in LABELS
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= n and y + h <= n
            rows, cols = np.nonzero(r.thing == k)
            s = r.supersample
            assert (cols.min() / s, rows.min() / s, (cols.max() + 1) / s, (rows.max() + 1) / s) == (x, y, x + w, y + h)


def _hot_part_temperature(obj) -> float | None:
    """Declared temperature (K) of a car's hot part: its engine hood, unless parked for hours."""
    if obj["label"] != "Car" or obj["state"] == "parked_cold":
        return None
    return next(p["temperature_k"] for p in obj["parts"] if p["name"] == "hood")


def _hires(box, s: int) -> tuple[slice, slice]:
    x, y, w, h = (round(v * s) for v in box)
    return slice(y, y + h), slice(x, x + w)


def test_a_just_parked_car_seen_from_nadir_shows_its_hot_hood():
    # The reported case: the hood lies on the body, and was painted under it.
    r = render_scene_layers(182, 128)
    assert r.gt["meta"]["view_angle_deg"] == 90.0
    k, car = next((k, o) for k, o in enumerate(r.gt["objects"]) if o["state"] == "just_parked")
    hood = _hot_part_temperature(car)
    rows, cols = _hires(car["hotspot_box"], r.supersample)
    shown = r.temperature_k[rows, cols][r.thing[rows, cols] == k]
    assert abs(shown.max() - hood) < 1e-3 and hood > car["temperature_k"] + 8


def test_declared_hot_parts_show_in_the_temperature_layer(scenes, parking_scenes):
    checked = 0
    for r in list(scenes) + parking_scenes:
        for k, obj in enumerate(r.gt["objects"]):
            mine = r.thing == k
            # The hottest part the ground truth declares is the hottest pixel of the object.
            assert abs(r.temperature_k[mine].max() - obj["max_temperature_k"]) < 1e-3, obj
            hood = _hot_part_temperature(obj)
            if hood is None:
                continue
            shows_hood = mine & (np.abs(r.temperature_k - hood) < 1e-3)  # parts are rounded to 1 mK
            if obj["hotspot_box"] is None:
                assert not shows_hood.any() and not (r.hotspot & mine).any(), obj
                continue
            checked += 1
            # The hot-spot box bounds exactly the hood pixels left visible, all at the hood's temperature.
            rows, cols = np.nonzero(r.hotspot & mine)
            s = r.supersample
            assert [cols.min() / s, rows.min() / s, (cols.max() + 1 - cols.min()) / s, (rows.max() + 1 - rows.min()) / s] == obj["hotspot_box"], obj
            assert np.array_equal(shows_hood, r.hotspot & mine), obj
            box_rows, box_cols = _hires(obj["hotspot_box"], s)
            assert abs(r.temperature_k[box_rows, box_cols][mine[box_rows, box_cols]].max() - hood) < 1e-3, obj
    assert checked >= 40


def test_hot_hoods_are_the_warmest_part_of_their_car_in_the_image(scenes, parking_scenes):
    checked = 0
    for r in list(scenes) + parking_scenes:
        img = _kelvin(r)
        for k, obj in enumerate(r.gt["objects"]):
            hood = _hot_part_temperature(obj)
            body = next((p["temperature_k"] for p in obj["parts"] if p["name"] == "body"), None)
            if hood is None or hood < body + 8:
                continue
            box = obj["hotspot_box"]
            if box is None or box[2] * box[3] < 4:  # hood out of sight, or smaller than 2 x 2 px
                continue
            # Output pixels wholly of this car and outside its declared hot-spot box.
            hot = _near(box, 0, img.shape)
            rest = _blocks(r.thing == k, r.supersample, "all") & ~hot
            if rest.sum() < 2:
                continue
            checked += 1
            assert img[hot].max() > img[rest].mean() + 1.0, obj
    assert checked >= 30


# --- variety ----------------------------------------------------------------------------------

def test_scenes_vary_in_content_conditions_and_view(scenes):
    metas = [r.gt["meta"] for r in scenes]
    counts = [len(r.gt["objects"]) for r in scenes]
    labels = {o["label"] for r in scenes for o in r.gt["objects"]}
    assert min(counts) == 0 and max(counts) >= 9
    assert labels == set(LABELS)
    assert {m["time_of_day"] for m in metas} == {"day", "night"}
    assert len({m["weather"] for m in metas}) >= 4
    assert len({m["scene"] for m in metas}) == 5
    assert {m["view"] for m in metas} == {"nadir", "oblique", "low"}
    assert any(m["sky"]["visible"] for m in metas) and not all(m["sky"]["visible"] for m in metas)
    states = {o["state"] for r in scenes for o in r.gt["objects"]}
    assert {"running", "just_parked", "parked_cold", "walking", "standing"} <= states


def test_sky_is_a_cold_radiative_sink_colder_higher_up():
    checked = 0
    for seed in range(12):
        r = render_scene_layers(500 + seed, 128, view="low", weather="clear")
        sky = _blocks((r.surface == 255) & (r.thing == -1), r.supersample, "all")
        rows = np.flatnonzero(sky.sum(axis=1) >= 5)
        if len(rows) < 3:
            continue
        checked += 1
        img = _kelvin(r)
        sky_gt = r.gt["meta"]["sky"]
        assert sky_gt["visible"] and sky_gt["zenith_k"] < r.gt["meta"]["ambient_k"] - 25.0  # clear
        assert img[sky].mean() < r.gt["meta"]["ambient_k"]
        top, bottom = img[rows[0]][sky[rows[0]]].mean(), img[rows[-1]][sky[rows[-1]]].mean()
        assert top < bottom  # longer, warmer air path towards the horizon
    assert checked >= 3


def test_fixed_options_are_validated():
    with pytest.raises(ValueError, match="weather"):
        render_scene(0, 32, weather="hail")
    with pytest.raises(ValueError, match="colour"):
        render_scene(0, 32, colour="red")


def test_a_flight_envelope_bounds_altitude_and_view_angle_and_drops_views_outside_it():
    from thermgen.data.synthetic.materials import VIEW_BANDS, envelope_bands, sample_conditions

    rng = np.random.default_rng(0)
    conds = [sample_conditions(rng, altitude_range_m=(60, 130), view_angle_range_deg=(30, 90)) for _ in range(300)]
    assert all(60 <= c.altitude_m <= 130 and 30 <= c.view_angle_deg <= 90 for c in conds)
    assert {c.view for c in conds} == {"nadir", "oblique"}  # low views (4-25 m) lie outside it
    assert any(c.view_angle_deg == 90.0 for c in conds)  # straight down stays possible
    assert min(c.altitude_m for c in conds) < 70 and max(c.altitude_m for c in conds) > 120
    tilted = [sample_conditions(rng, view_angle_range_deg=(50, 80)) for _ in range(100)]  # 90 deg lies outside it
    assert all(50 <= c.view_angle_deg <= 80 for c in tilted) and {c.view for c in tilted} == {"nadir", "oblique"}
    # an envelope as wide as every view's bands leaves the draws as they were
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert [sample_conditions(a) for _ in range(20)] == [sample_conditions(b, altitude_range_m=(0, 500), view_angle_range_deg=(0, 90)) for _ in range(20)]
    assert envelope_bands() == VIEW_BANDS
    assert envelope_bands(view_angle_range_deg=(50, 80)) == {"nadir": ((70, 80), (30, 130)), "oblique": ((50, 70), (30, 130))}
    with pytest.raises(ValueError, match="no view of the synthetic scenes fits"):
        envelope_bands(altitude_range_m=(200, 300))
    with pytest.raises(ValueError, match="low <= high"):
        envelope_bands(view_angle_range_deg=(80, 30))
    with pytest.raises(ValueError, match="outside the flight envelope"):
        sample_conditions(np.random.default_rng(0), view="low", altitude_range_m=(60, 130))
    _, gt = render_scene(0, 32, view_angle_range_deg=(85, 90))
    assert gt["meta"]["view"] == "nadir" and gt["meta"]["view_angle_deg"] >= 85


def test_object_scale_multiplies_the_drawn_objects():
    def mean_objects(**kw):
        return np.mean([len(render_scene(np.random.default_rng([1, i]), 48, **kw)[1]["objects"]) for i in range(30)])

    assert mean_objects(object_scale=2.5) > 1.6 * mean_objects()
    assert mean_objects(object_scale=0.01) == 0  # every draw rounds to no object
    for bad in (0, -1, float("nan"), "2", True):
        with pytest.raises(ValueError, match="object_scale"):
            render_scene(0, 32, object_scale=bad)


def test_generate_records_its_scene_options_and_validates_them(tmp_path):
    opts = {"altitude_range_m": [60, 130], "view_angle_range_deg": (30, 90), "object_scale": 2}
    generate(tmp_path / "d", 6, size=32, seed=1, scene_options=opts, progress=False)
    card = json.loads((tmp_path / "d" / "synthetic.json").read_text())
    assert card["scene_options"] == {"altitude_range_m": [60.0, 130.0], "view_angle_range_deg": [30.0, 90.0], "object_scale": 2}
    lines = [json.loads(x) for x in (tmp_path / "d" / "train.jsonl").read_text().splitlines()]
    assert lines and all(60 <= r["meta"]["altitude_m"] <= 130 and r["meta"]["view"] != "low" for r in lines)
    assert json.loads((tmp_path / "d" / "synthetic.json").read_text())["n"] == 6
    with pytest.raises(ValueError, match="unknown scene option"):
        generate(tmp_path / "e", 2, size=32, scene_options={"altitude": (1, 2)}, progress=False)
    with pytest.raises(ValueError, match="outside the flight envelope"):
        generate(tmp_path / "e", 2, size=32, scene_options={"view": "low", "view_angle_range_deg": (30, 90)}, progress=False)
    with pytest.raises(ValueError, match="weather must be one of"):
        generate(tmp_path / "e", 2, size=32, scene_options={"weather": "hail"}, progress=False)
    assert not (tmp_path / "e").exists()  # refused before anything is written


# --- dataset folder and loader ----------------------------------------------------------------

def test_split_counts_are_exact_and_never_empty_when_possible():
    assert split_counts(10, (("train", 0.8), ("val", 0.1), ("test", 0.1))) == {"train": 8, "val": 1, "test": 1}
    assert split_counts(3, (("train", 0.8), ("val", 0.1), ("test", 0.1))) == {"train": 1, "val": 1, "test": 1}
    assert sum(split_counts(1001, (("a", 0.5), ("b", 0.5))).values()) == 1001


def test_loader_round_trips_the_ground_truth(dataset):
    report = SkipReport()
    samples = load(dataset, None, report)
    assert report.total == 0 and len(samples) == 12
    card = json.loads((dataset / "synthetic.json").read_text())
    assert {s.split for s in samples} == set(card["splits"]) == {"train", "val", "test"}
    for s in samples:
        line = next(json.loads(t) for t in (dataset / f"{s.split}.jsonl").read_text().splitlines() if json.loads(t)["image_id"] == s.image_id)
        img, gt = render_scene(np.random.default_rng([5, line["index"]]), 48)
        assert s.source == "synthetic" and s.width == s.height == 48
        assert s.radiometric == CALIBRATION
        assert np.array_equal(read_thermal(s.image_path, norm="none").astype(np.uint16), img)
        assert [(b.label, list(b.xywh)) for b in s.boxes] == [(o["label"], o["box"]) for o in gt["objects"]]
        for b, o in zip(s.boxes, gt["objects"]):
            assert b.attrs == {k: v for k, v in o.items() if k not in ("label", "box")}
        assert s.meta["time_of_day"] == gt["meta"]["time_of_day"] and s.meta["surfaces"] == gt["meta"]["surfaces"]
        assert s.meta["frame"] == s.image_id


def test_loader_reads_one_split(dataset):
    val = load(dataset, "val", SkipReport())
    assert len(val) == 1 and val[0].split == "val"
    with pytest.raises(DataError, match="no split 'dev'"):
        load(dataset, "dev", SkipReport())


def _corrupt_copy(dataset: Path, tmp_path: Path, edit) -> Path:
    import shutil

    out = tmp_path / "bad"
    shutil.copytree(dataset, out)
    lines = (out / "train.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    lines[1] = edit(rec)
    (out / "train.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize(
    "edit, reason, message",
    [
        (lambda r: "{not json", "invalid JSON", "not valid JSON"),
        (lambda r: json.dumps(r | {"image": "images/train/nope.png"}), "missing image", "nope.png"),
        (lambda r: json.dumps(r | {"objects": [{"label": "Tank", "box": [1, 1, 2, 2]}]}), "unknown label", "objects[0].label 'Tank'"),
        (lambda r: json.dumps(r | {"objects": [{"label": "Car", "box": [40, 40, 20, 5]}]}), "box outside image", "objects[0].box"),
        (lambda r: json.dumps({k: v for k, v in r.items() if k != "width"}), "invalid record", "field 'width'"),
    ],
)
def test_bad_records_raise_naming_file_and_line_or_are_counted_when_skipping(dataset, tmp_path, edit, reason, message):
    bad = _corrupt_copy(dataset, tmp_path, edit)
    with pytest.raises(DataError, match="train.jsonl:2") as e:
        load(bad, "train", SkipReport())
    assert message in str(e.value)
    report = SkipReport()
    samples = load(bad, "train", report, skip_invalid=True)
    assert report.counts == {reason: 1} and report.examples[reason][0].endswith("train.jsonl:2")
    assert len(samples) == len(load(dataset, "train", SkipReport())) - 1


def test_loader_rejects_a_folder_without_a_complete_card(tmp_path, dataset):
    with pytest.raises(DataError, match="synthetic.json"):
        load(tmp_path, None, SkipReport())
    import shutil

    half = tmp_path / "half"
    shutil.copytree(dataset, half)
    card = json.loads((half / "synthetic.json").read_text())
    (half / "synthetic.json").write_text(json.dumps(card | {"complete": False}))
    with pytest.raises(DataError, match="'complete'"):
        load(half, None, SkipReport())


def test_generate_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate(tmp_path / "foreign", n=2, size=16, progress=False)
    ds = generate(tmp_path / "ds", n=5, size=16, progress=False)
    generate(ds, n=2, size=16, progress=False)
    assert len(list(ds.rglob("*.png"))) == 2 and len(load(ds, None, SkipReport())) == 2


def test_generate_validates_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="sum to 1"):
        generate(tmp_path / "x", n=4, splits=(("train", 0.5), ("val", 0.2)), progress=False)
    with pytest.raises(ValueError, match="n must be"):
        generate(tmp_path / "x", n=0, progress=False)
