"""IR-Cap caption rendering: prefixes, token budget, counts that parse back, seeded variety, no guesses."""

import re

import numpy as np
import pytest

from thermgen.ircap.facts import infer_facts
from thermgen.ircap.measure import measure_image
from thermgen.ircap.render import (
    COLOUR_WORDS, FINE_PREFIX, GLOBAL_PREFIX, MAX_TOKENS, count_tokens, layout_phrase, number, parse_counts,
    render_captions,
)

META = {"time_of_day": "night", "weather": "clear", "altitude_m": 80.0, "view_angle_deg": 60.0}


def _image(seed=0, n_people=3, n_cars=2, size=(128, 160)):
    rng = np.random.default_rng(seed)
    img = np.full(size, 0.35, np.float32) + rng.normal(0, 0.004, size).astype(np.float32)
    img[:, :8] = np.linspace(0.1, 0.9, size[0])[:, None]
    boxes, labels = [], []
    for k in range(n_people):
        x, y = 20 + 25 * k, 20 + 10 * k
        img[y + 3:y + 11, x + 2:x + 5] = 0.8
        boxes.append([x, y, 7, 14]); labels.append("Person")
    for k in range(n_cars):
        x, y = 30 + 40 * k, 90
        img[y:y + 14, x:x + 28] = 0.25
        boxes.append([x, y, 28, 14]); labels.append("Car")
    return img, boxes, labels


def _caps(img, boxes, labels, meta=META, seed=0, key="k"):
    meas = measure_image(img, boxes)
    scene, objs = infer_facts(meas, labels, meta)
    return render_captions(scene, objs, labels, meas, seed=seed, key=key)


def test_captions_begin_with_their_prefixes_and_fit_the_token_limit():
    c = _caps(*_image())
    assert c.global_caption.startswith(GLOBAL_PREFIX + " ")
    assert c.fine_caption.startswith(FINE_PREFIX)
    assert c.tokens_global == count_tokens(c.global_caption) <= MAX_TOKENS
    assert c.tokens_fine == count_tokens(c.fine_caption) <= MAX_TOKENS


def test_counts_in_the_global_caption_parse_back_to_the_annotation():
    c = _caps(*_image(n_people=3, n_cars=2))
    assert parse_counts(c.global_caption, ["Person", "Car"]) == {"Person": [3], "Car": [2]}


def test_crowded_scene_drops_whole_clauses_and_keeps_counts():
    rng = np.random.default_rng(1)
    img = np.full((256, 320), 0.4, np.float32) + rng.normal(0, 0.01, (256, 320)).astype(np.float32)
    labels = ["Person"] * 23 + ["Car"] * 17 + ["Bicycle"] * 9 + ["OtherVehicle"] * 3
    boxes = [[float(rng.uniform(0, 300)), float(rng.uniform(0, 240)), 12.0, 12.0] for _ in labels]
    for seed in range(5):
        c = _caps(img, boxes, labels, seed=seed, key="crowd")
        for text in (c.global_caption, c.fine_caption):
            assert count_tokens(text) <= MAX_TOKENS
            assert text.endswith(".")  # whole clauses dropped, never a cut word
        assert parse_counts(c.global_caption, ["Person", "Car", "Bicycle", "OtherVehicle"]) == {
            "Person": [23], "Car": [17], "Bicycle": [9], "OtherVehicle": [3]}


def test_same_seed_same_captions_other_seeds_vary_wording():
    img, boxes, labels = _image()
    a = _caps(img, boxes, labels, seed=0)
    assert a == _caps(img, boxes, labels, seed=0)
    variants = {_caps(img, boxes, labels, seed=s).global_caption for s in range(12)}
    assert len(variants) >= 4


def test_undecidable_facts_are_never_stated():
    # No metadata and no background around the boxes (each box is ringed by others): nothing to
    # say about time, weather, viewpoint or any object's heat -- only the annotated counts.
    img = np.random.default_rng(0).uniform(0.3, 0.6, (60, 60)).astype(np.float32)
    boxes = [[x, y, 20, 20] for x in (0, 20, 40) for y in (0, 20, 40)]
    labels = ["Car"] * 9
    meas = measure_image(img, boxes)
    assert all(o["contrast_rel"] is None for o in meas["objects"])
    c = _caps(img, boxes, labels, meta={})
    text = (c.global_caption + " " + c.fine_caption).lower()
    for word in ("night", "day", "rain", "clear", "fog", " m ", "°", "warm", "cold", "parked", "running", "engine", "sky", "wet"):
        assert word not in text, word
    assert {s["fact"] for s in c.stated} == {"count"}
    assert parse_counts(c.global_caption, ["Car"]) == {"Car": [9]}


def test_time_of_day_from_metadata_is_stated():
    c = _caps(*_image(), meta=dict(META, time_of_day="day"))
    text = c.global_caption + c.fine_caption
    assert re.search(r"daytime|by day|during the day|day scene", text) and "night" not in text


def test_no_colour_words():
    for seed in range(8):
        c = _caps(*_image(seed=seed), seed=seed)
        words = set(re.findall(r"[a-z]+", (c.global_caption + " " + c.fine_caption).lower()))
        assert not words & COLOUR_WORDS


def test_warm_people_and_parked_cars_at_night_are_described_with_causes():
    c = _caps(*_image())
    facts = {(s["fact"], s.get("value")) for s in c.stated}
    assert ("person_heat", "warm") in facts and ("vehicle_state", "parked") in facts
    assert "body heat" in c.fine_caption and "parked" in c.fine_caption


def test_layout_names_a_row_and_breaks_groups_down_by_region():
    rng = __import__("random").Random(0)
    row = [[0.1 + 0.15 * k, 0.1 + 0.15 * k] for k in range(6)]
    detailed, _ = layout_phrase(row, rng)
    assert "from the upper left to the lower right" in detailed
    split = [[0.05, 0.3], [0.3, 0.05], [0.15, 0.15], [0.7, 0.95], [0.95, 0.7]]
    detailed, compact = layout_phrase(split, rng)
    assert detailed == "three in the upper left and two in the lower right"
    assert compact.startswith("mostly in the upper left") or "frame" in compact or "scene" in compact


@pytest.mark.parametrize("text,expected", [
    ("with three cars and one person", {"Car": [3], "Person": [1]}),
    ("24 people near the centre; twelve bicycles", {"Person": [24], "Bicycle": [12]}),
    ("two other vehicles on the left", {"OtherVehicle": [2]}),
])
def test_parse_counts_reads_number_words_and_digits(text, expected):
    assert parse_counts(text, ["Car", "Person", "Bicycle", "OtherVehicle"]) == expected


def test_running_vehicle_on_radiometric_data_states_its_excess_in_kelvin():
    rng = np.random.default_rng(0)
    img = np.full((96, 128), 0.45, np.float32) + rng.normal(0, 0.002, (96, 128)).astype(np.float32)
    img[:, :6] = np.linspace(0.3, 0.6, 96)[:, None]
    img[40:56, 50:80] = 0.50   # car body slightly warm
    img[42:54, 74:80] = 0.60   # hot engine at the front end: 0.15 units * 100 K/unit = 15 K above the road
    meas = measure_image(img, [[50, 40, 30, 16]], kelvin_per_unit=100.0, kelvin_offset=250.0)
    scene, objs = infer_facts(meas, ["Car"], {"time_of_day": "day"})
    assert {f.name: f.value for f in objs[0]}["vehicle_state"] == "running"
    c = render_captions(scene, objs, ["Car"], meas, seed=0, key="r")
    assert re.search(r"\b1[45] K above", c.fine_caption), c.fine_caption


def test_very_many_labels_still_fit_by_summarising_the_smallest_groups():
    # A COCO-style image with dozens of labels: the limit wins, and nothing is miscounted.
    rng = np.random.default_rng(2)
    img = rng.uniform(0.2, 0.8, (200, 200)).astype(np.float32)
    names = [f"Thing{k}" for k in range(30)]
    labels = [names[k] for k in range(30) for _ in range(30 - k)]
    boxes = [[float(rng.uniform(0, 180)), float(rng.uniform(0, 180)), 10.0, 10.0] for _ in labels]
    c = _caps(img, boxes, labels, meta={})
    assert count_tokens(c.global_caption) <= MAX_TOKENS
    found = parse_counts(c.global_caption, names)
    counts = {lab: labels.count(lab) for lab in names}
    assert found and all(v == [counts[lab]] for lab, v in found.items())
    omitted = sum(counts[lab] for lab in names if lab not in found)
    assert omitted > 0 and f" {number(omitted)} other objects" in c.global_caption
    assert {s["label"] for s in c.stated if s["fact"] == "count"} == set(found)
