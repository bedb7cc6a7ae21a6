"""HIT-UAV adapter: the real subset read completely and exactly; each bad record caught."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thermgen.data import load_samples
from thermgen.data.hituav import parse_filename
from thermgen.data.sample import DataError

SPLITS = ("train", "val", "test")


def _annotation_file(root: Path, split: str) -> dict:
    return json.loads((root / "normal_json" / "annotations" / f"{split}.json").read_text())


@pytest.fixture(scope="module")
def real(hit_uav_root):
    samples, report = load_samples("hit-uav", hit_uav_root)
    return hit_uav_root, samples, report


# --- the real data -------------------------------------------------------------------------------


def test_every_image_of_every_split_is_read_with_its_box_count(real):
    root, samples, report = real
    assert report.total == 0
    got = {(s.split, s.image_path.name): len(s.boxes) for s in samples}
    expected = {}
    for split in SPLITS:
        data = _annotation_file(root, split)
        per_image = Counter(a["image_id"] for a in data["annotation"])
        for im in data["images"]:
            expected[(split, im["filename"])] = per_image[im["id"]]
    assert got == expected


def test_labels_per_split_match_the_annotation_files(real):
    root, samples, _ = real
    for split in SPLITS:
        data = _annotation_file(root, split)
        names = {c["id"]: c["name"] for c in data["categories"]}
        expected = Counter(names[a["category_id"]] for a in data["annotation"])
        assert Counter(b.label for s in samples if s.split == split for b in s.boxes) == expected, split


def test_boxes_are_the_annotated_pixel_boxes(real):
    root, samples, _ = real
    data = _annotation_file(root, "val")
    names = {c["id"]: c["name"] for c in data["categories"]}
    file_of = {im["id"]: im["filename"] for im in data["images"]}
    expected = Counter((file_of[a["image_id"]], names[a["category_id"]], tuple(map(float, a["bbox"]))) for a in data["annotation"])
    got = Counter((s.image_path.name, b.label, b.xywh) for s in samples if s.split == "val" for b in s.boxes)
    assert got == expected


def test_metadata_is_parsed_for_every_file_name(real):
    _, samples, _ = real
    for s in samples:
        tod, alt, angle, weather, frame = s.image_path.stem.split("_")
        assert s.meta == {
            "time_of_day": {"0": "day", "1": "night"}[tod],
            "altitude_m": float(alt),
            "view_angle_deg": float(angle),
            "weather": {"0": "clear", "1": "rain"}[weather],
            "frame": frame,
        }, s.image_path


def test_samples_point_at_existing_images_with_unique_ids(real):
    _, samples, _ = real
    assert all(s.image_path.is_absolute() and s.image_path.is_file() for s in samples)
    assert len({s.image_id for s in samples}) == len(samples)
    assert {s.source for s in samples} == {"hit-uav"}
    assert all((s.width, s.height) == (640, 512) and s.radiometric is None for s in samples)


def test_dontcare_boxes_are_kept_and_marked_ignore(real):
    _, samples, _ = real
    dont = [b for s in samples for b in s.boxes if b.label == "DontCare"]
    assert dont and all(b.attrs.get("ignore") is True for b in dont)
    assert not any(b.attrs.get("ignore") for s in samples for b in s.boxes if b.label != "DontCare")


def test_split_argument_reads_one_split(hit_uav_root):
    samples, _ = load_samples("hit-uav", hit_uav_root, split="val")
    assert len(samples) == len(_annotation_file(hit_uav_root, "val")["images"])
    assert {s.split for s in samples} == {"val"}


def test_normal_json_folder_is_accepted_as_root(hit_uav_root):
    samples, _ = load_samples("hit-uav", hit_uav_root / "normal_json", split="val")
    assert len(samples) == len(_annotation_file(hit_uav_root, "val")["images"])


def test_unknown_split_is_an_error_listing_the_splits(hit_uav_root):
    with pytest.raises(DataError, match="no split 'nope'; available: train, val, test"):
        load_samples("hit-uav", hit_uav_root, split="nope")


def test_parse_filename_known_values():
    assert parse_filename("1_130_90_1_00042.jpg") == {
        "time_of_day": "night",
        "altitude_m": 130.0,
        "view_angle_deg": 90.0,
        "weather": "rain",
        "frame": "00042",
    }
    assert parse_filename("frame_0001.jpg") == {}


# --- bad input, on a tiny copy of the schema -----------------------------------------------------

CATEGORIES = [
    {"supercategory": "Person", "id": 0, "name": "Person"},
    {"supercategory": "Vehicle", "id": 1, "name": "Car"},
    {"supercategory": "Vehicle", "id": 2, "name": "Bicycle"},
    {"supercategory": "Vehicle", "id": 3, "name": "OtherVehicle"},
    {"supercategory": "DontCare", "id": 4, "name": "DontCare"},
]


def make_hituav(root: Path, annotations: list[dict], images: list[dict] | None = None, write_images: bool = True) -> Path:
    """A one-split HIT-UAV folder in the upstream schema (64x48 JPEGs)."""
    base = root / "normal_json"
    (base / "annotations").mkdir(parents=True)
    (base / "val").mkdir()
    if images is None:
        images = [
            {"filename": "0_60_90_0_00001.jpg", "height": 48, "width": 64, "id": 1, "date_captured": "20210116"},
            {"filename": "1_100_30_1_00002.jpg", "height": 48, "width": 64, "id": 2, "date_captured": "20210116"},
        ]
    if write_images:
        for im in images:
            if isinstance(im, dict) and isinstance(im.get("filename"), str):
                Image.fromarray(np.full((48, 64), 90, np.uint8)).save(base / "val" / im["filename"])
    data = {"info": {"year": "2020"}, "licenses": [], "images": images, "categories": CATEGORIES, "annotation": annotations}
    (base / "annotations" / "val.json").write_text(json.dumps(data))
    return root


def _ann(i, image_id=1, bbox=(10, 10, 5, 8), category_id=0):
    return {"segmentation": [], "area": 40, "image_id": image_id, "bbox": list(bbox), "category_id": category_id, "id": i}


def test_fixture_in_upstream_schema_reads_cleanly(tmp_path):
    root = make_hituav(tmp_path, [_ann(100), _ann(101, image_id=2, category_id=4)])
    samples, report = load_samples("hit-uav", root)
    assert report.total == 0 and sorted(len(s.boxes) for s in samples) == [1, 1]
    night = next(s for s in samples if s.image_id == "1_100_30_1_00002")
    assert night.meta["time_of_day"] == "night" and night.meta["weather"] == "rain"


def test_box_outside_image_names_file_and_record(tmp_path):
    root = make_hituav(tmp_path, [_ann(100), _ann(101, bbox=(60, 10, 20, 8))])
    with pytest.raises(DataError, match=r"val\.json: annotation\[1\] \(id=101, image_id=1\): box outside image"):
        load_samples("hit-uav", root)


def test_box_outside_image_is_counted_when_skipping(tmp_path):
    root = make_hituav(tmp_path, [_ann(100), _ann(101, bbox=(60, 10, 20, 8))])
    samples, report = load_samples("hit-uav", root, skip_invalid=True)
    assert report.counts == {"box outside image": 1}
    assert sum(len(s.boxes) for s in samples) == 1 and len(samples) == 2


def test_box_overrunning_the_border_by_a_pixel_is_clipped(tmp_path):
    root = make_hituav(tmp_path, [_ann(100, bbox=(-1, 40, 10, 9))])
    samples, report = load_samples("hit-uav", root)
    box = next(s for s in samples if s.boxes).boxes[0]
    assert report.total == 0 and box.xywh == (0.0, 40.0, 9.0, 8.0)


def test_unknown_label_names_file_and_record(tmp_path):
    root = make_hituav(tmp_path, [_ann(100, category_id=9)])
    with pytest.raises(DataError, match=r"annotation\[0\] \(id=100, image_id=1\): unknown label: category_id 9"):
        load_samples("hit-uav", root)
    _, report = load_samples("hit-uav", root, skip_invalid=True)
    assert report.counts == {"unknown label": 1}


def test_missing_image_names_file_and_record(tmp_path):
    root = make_hituav(tmp_path, [_ann(100), _ann(101, image_id=2)])
    (root / "normal_json" / "val" / "1_100_30_1_00002.jpg").unlink()
    with pytest.raises(DataError, match=r"val\.json: images\[1\] \(id=2, filename='1_100_30_1_00002.jpg'\): missing image"):
        load_samples("hit-uav", root)
    samples, report = load_samples("hit-uav", root, skip_invalid=True)
    # the image is skipped with its box, and only the image is counted
    assert report.counts == {"missing image": 1} and [s.image_id for s in samples] == ["0_60_90_0_00001"]


def test_broken_annotation_record_names_file_and_record(tmp_path):
    bad = _ann(101)
    del bad["bbox"]
    root = make_hituav(tmp_path, [_ann(100), bad, _ann(102, bbox=(1, 2, "x", 4))])
    with pytest.raises(DataError, match=r"annotation\[1\] \(id=101, image_id=1\): broken record: missing 'bbox'"):
        load_samples("hit-uav", root)
    _, report = load_samples("hit-uav", root, skip_invalid=True)
    assert report.counts == {"broken record": 2}


def test_broken_image_record_names_file_and_record(tmp_path):
    images = [{"height": 48, "width": 64, "id": 1}, {"filename": "0_60_90_0_00003.jpg", "height": 0, "width": 64, "id": 3}]
    root = make_hituav(tmp_path, [], images=images)
    with pytest.raises(DataError, match=r"images\[0\] \(id=1, filename=None\): broken record: missing 'filename'"):
        load_samples("hit-uav", root)
    _, report = load_samples("hit-uav", root, skip_invalid=True)
    assert report.counts == {"broken record": 2}


def test_invalid_json_names_file_and_line(tmp_path):
    root = make_hituav(tmp_path, [])
    path = root / "normal_json" / "annotations" / "val.json"
    path.write_text('{"images": [\n  {"filename": "a.jpg",\n')
    with pytest.raises(DataError, match=r"val\.json: line 3 column 1: not valid JSON"):
        load_samples("hit-uav", root, skip_invalid=True)


def test_missing_annotation_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="normal_json/annotations: not found"):
        load_samples("hit-uav", tmp_path)
