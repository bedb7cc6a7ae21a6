"""KAIST adapter on a small fixture in the real layout and bbGt version=3 text format."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thermgen.data import list_splits, load_samples
from thermgen.data.kaist import set_meta
from thermgen.data.sample import DataError

W, H = 64, 48


def write_frame(root: Path, set_name: str, video: str, frame: str, lines: list[str] | None, header: str = "% bbGt version=3") -> None:
    img = root / "images" / set_name / video / "lwir" / f"{frame}.jpg"
    img.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W), 80, np.uint8)).save(img)
    vis = root / "images" / set_name / video / "visible" / f"{frame}.jpg"
    vis.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), [10, 200, 30], np.uint8)).save(vis)  # colour: must never be read
    if lines is not None:
        txt = root / "annotations" / set_name / video / f"{frame}.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text("\n".join([header, *lines]) + "\n")


def make_kaist(root: Path) -> Path:
    write_frame(root, "set00", "V000", "I00000", ["person 10 12 6 14 0 0 0 0 0 0 0", "people 30 10 12 16 1 0 0 0 0 0 0"])
    write_frame(root, "set00", "V000", "I00001", [])
    write_frame(root, "set04", "V001", "I00019", ["cyclist 1 2 8 9 0 0 0 0 0 0 0", "person 40 20 5 10 2 0 0 0 0 1 0"])
    write_frame(root, "set09", "V000", "I01219", ["person? 20 20 4 8 0 0 0 0 0 0 0"])
    return root


def test_official_splits_come_from_set_ids(tmp_path):
    root = make_kaist(tmp_path)
    assert list_splits("kaist", root) == ["train", "test"]
    samples, report = load_samples("kaist", root)
    assert report.total == 0
    assert sorted((s.split, s.image_id) for s in samples) == [
        ("test", "set09_V000_I01219"),
        ("train", "set00_V000_I00000"),
        ("train", "set00_V000_I00001"),
        ("train", "set04_V001_I00019"),
    ]


def test_day_and_night_come_from_set_ids():
    day = [f"set{k:02d}" for k in (0, 1, 2, 6, 7, 8)]
    night = [f"set{k:02d}" for k in (3, 4, 5, 9, 10, 11)]
    assert all(set_meta(s)["time_of_day"] == "day" for s in day)
    assert all(set_meta(s)["time_of_day"] == "night" for s in night)
    assert set_meta("set02")["scene"] == "downtown" and set_meta("set12") == {}


def test_boxes_labels_and_metadata_are_read(tmp_path):
    samples, _ = load_samples("kaist", make_kaist(tmp_path))
    s = next(x for x in samples if x.image_id == "set00_V000_I00000")
    assert s.image_path == (tmp_path / "images" / "set00" / "V000" / "lwir" / "I00000.jpg").resolve()
    assert (s.width, s.height) == (W, H)
    assert [(b.label, b.xywh, b.attrs) for b in s.boxes] == [
        ("person", (10.0, 12.0, 6.0, 14.0), {}),
        ("people", (30.0, 10.0, 12.0, 16.0), {"occlusion": 1, "ignore": True}),
    ]
    assert s.meta == {"time_of_day": "day", "scene": "campus", "frame": "set00/V000/I00000"}
    night = next(x for x in samples if x.image_id == "set04_V001_I00019")
    assert night.meta["time_of_day"] == "night"
    assert night.boxes[1].attrs == {"occlusion": 2, "ignore": True}  # ign=1 on a person


def test_image_set_lists_are_splits(tmp_path):
    root = make_kaist(tmp_path)
    (root / "imageSets").mkdir()
    (root / "imageSets" / "test-all-20.txt").write_text("set09/V000/I01219\n")
    assert "test-all-20" in list_splits("kaist", root)
    samples, _ = load_samples("kaist", root, split="test-all-20")
    assert [s.image_id for s in samples] == ["set09_V000_I01219"]


def test_box_outside_image_names_file_and_line(tmp_path):
    root = make_kaist(tmp_path)
    write_frame(root, "set01", "V000", "I00005", ["person 1 1 5 5 0 0 0 0 0 0 0", "person 60 40 20 20 0 0 0 0 0 0 0"])
    with pytest.raises(DataError, match=r"set01/V000/I00005\.txt: line 3: box outside image"):
        load_samples("kaist", root)
    samples, report = load_samples("kaist", root, skip_invalid=True)
    assert report.counts == {"box outside image": 1}
    assert len(next(s for s in samples if s.image_id == "set01_V000_I00005").boxes) == 1


def test_unknown_label_names_file_and_line(tmp_path):
    root = make_kaist(tmp_path)
    write_frame(root, "set01", "V000", "I00005", ["dog 1 1 5 5 0 0 0 0 0 0 0"])
    with pytest.raises(DataError, match=r"I00005\.txt: line 2: unknown label: 'dog'"):
        load_samples("kaist", root)
    _, report = load_samples("kaist", root, skip_invalid=True)
    assert report.counts == {"unknown label": 1}


def test_missing_image_names_the_annotation_file(tmp_path):
    root = make_kaist(tmp_path)
    (root / "images" / "set09" / "V000" / "lwir" / "I01219.jpg").unlink()
    with pytest.raises(DataError, match=r"set09/V000/I01219\.txt: missing image"):
        load_samples("kaist", root)
    samples, report = load_samples("kaist", root, skip_invalid=True)
    assert report.counts == {"missing image": 1} and len(samples) == 3


def test_broken_line_names_file_and_line(tmp_path):
    root = make_kaist(tmp_path)
    write_frame(root, "set01", "V000", "I00005", ["person 1 1 five 5 0 0 0 0 0 0 0", "person 1 1 5"])
    with pytest.raises(DataError, match=r"I00005\.txt: line 2: broken record"):
        load_samples("kaist", root)
    _, report = load_samples("kaist", root, skip_invalid=True)
    assert report.counts == {"broken record": 2}


def test_missing_header_is_a_broken_record(tmp_path):
    root = make_kaist(tmp_path)
    write_frame(root, "set01", "V000", "I00005", ["person 1 1 5 5 0 0 0 0 0 0 0"], header="person 2 2 5 5 0 0 0 0 0 0 0")
    with pytest.raises(DataError, match=r"I00005\.txt: line 1: broken record: expected the header"):
        load_samples("kaist", root)


def test_unreadable_image_is_counted_when_skipping(tmp_path):
    root = make_kaist(tmp_path)
    write_frame(root, "set07", "V002", "I00001", [])
    (root / "images" / "set07" / "V002" / "lwir" / "I00001.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"I00001\.jpg: empty file"):
        load_samples("kaist", root)
    _, report = load_samples("kaist", root, skip_invalid=True)
    assert report.counts == {"unreadable image": 1}


def test_root_without_annotations_is_an_error(tmp_path):
    with pytest.raises(DataError, match="annotations: not found"):
        load_samples("kaist", tmp_path)
