"""Folder adapter: images with optional CSV/JSONL captions."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thermgen.data import load_samples
from thermgen.data.sample import DataError
from thermgen.io import write_png16


def _img(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), 60, np.uint8)).save(path)


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_images_only_folder_reads_every_image_with_its_header_size(tmp_path):
    _img(tmp_path / "a.jpg", (40, 30))
    write_png16(tmp_path / "sub" / "b.png", np.zeros((20, 24), np.uint16))
    np.save(tmp_path / "c.npy", np.zeros((8, 9), np.float32))
    (tmp_path / "notes.txt").write_text("not an image")
    _img(tmp_path / ".cache" / "hidden.jpg")
    samples, report = load_samples("folder", tmp_path)
    assert report.total == 0
    assert sorted((s.image_id, s.width, s.height, s.split) for s in samples) == [
        ("a", 40, 30, "all"),
        ("c", 9, 8, "all"),
        ("sub/b", 24, 20, "all"),
    ]
    assert all(s.captions is None and s.boxes == [] and s.source == "folder" for s in samples)


def test_split_folders_become_splits(tmp_path):
    _img(tmp_path / "train" / "a.jpg")
    _img(tmp_path / "test" / "b.jpg")
    samples, _ = load_samples("folder", tmp_path)
    assert sorted((s.split, s.image_id) for s in samples) == [("test", "test/b"), ("train", "train/a")]
    only, _ = load_samples("folder", tmp_path, split="test")
    assert [s.image_id for s in only] == ["test/b"]


def test_csv_captions_and_metadata_are_attached(tmp_path):
    _img(tmp_path / "a.jpg")
    _img(tmp_path / "b.jpg")
    (tmp_path / "captions.csv").write_text(
        "file_name,global_caption,fine_caption,time_of_day,altitude_m,split\n"
        "a.jpg,An infrared thermal image of a road.,Thermal infrared image: warm asphalt.,night,60,test\n"
    )
    samples, _ = load_samples("folder", tmp_path)
    a = next(s for s in samples if s.image_id == "a")
    assert a.captions == {"global_caption": "An infrared thermal image of a road.", "fine_caption": "Thermal infrared image: warm asphalt."}
    assert a.meta == {"time_of_day": "night", "altitude_m": 60.0} and a.split == "test"
    b = next(s for s in samples if s.image_id == "b")
    assert b.captions is None and b.split == "all"  # images without a row are kept


def test_jsonl_rows_with_objects_and_meta(tmp_path):
    _img(tmp_path / "a.jpg", (40, 30))
    _jsonl(tmp_path / "captions.jsonl", [{"image": "a.jpg", "caption": "a hot car", "meta": {"weather": "fog"}, "objects": [{"label": "Car", "box": [1, 2, 10, 8], "facts": {"state": "running"}}]}])
    samples, _ = load_samples("folder", tmp_path)
    s = samples[0]
    assert s.captions == {"caption": "a hot car"} and s.meta == {"weather": "fog"}
    assert [(b.label, b.xywh, b.attrs) for b in s.boxes] == [("Car", (1.0, 2.0, 10.0, 8.0), {"state": "running"})]


def test_a_captions_file_can_be_the_root(tmp_path):
    _img(tmp_path / "imgs" / "a.jpg")
    manifest = _jsonl(tmp_path / "manifest.jsonl", [{"schema_version": 1, "image": "imgs/a.jpg", "split": "val", "global_caption": "An infrared thermal image of a yard."}])
    samples, _ = load_samples("folder", manifest)
    assert [(s.image_id, s.split, s.captions) for s in samples] == [("imgs/a", "val", {"global_caption": "An infrared thermal image of a yard."})]


def test_missing_image_names_file_and_line(tmp_path):
    _img(tmp_path / "a.jpg")
    _jsonl(tmp_path / "captions.jsonl", [{"file_name": "a.jpg", "caption": "x"}, {"file_name": "gone.jpg", "caption": "y"}])
    with pytest.raises(DataError, match=r"captions\.jsonl: line 2: missing image"):
        load_samples("folder", tmp_path)
    samples, report = load_samples("folder", tmp_path, skip_invalid=True)
    assert report.counts == {"missing image": 1} and len(samples) == 1


def test_broken_jsonl_line_names_file_and_line(tmp_path):
    _img(tmp_path / "a.jpg")
    _jsonl(tmp_path / "captions.jsonl", ['{"file_name": "a.jpg", "caption": "x"}', '{"file_name": "b.jpg", "capt'])
    with pytest.raises(DataError, match=r"captions\.jsonl: line 2: broken record: not valid JSON"):
        load_samples("folder", tmp_path)


def test_duplicate_row_names_both_lines(tmp_path):
    _img(tmp_path / "a.jpg")
    _jsonl(tmp_path / "captions.jsonl", [{"file_name": "a.jpg"}, {"file_name": "a.jpg"}])
    with pytest.raises(DataError, match=r"line 2: duplicate record: .*already described at .*line 1"):
        load_samples("folder", tmp_path)


def test_bad_metadata_value_names_file_line_and_key(tmp_path):
    _img(tmp_path / "a.jpg")
    (tmp_path / "captions.csv").write_text("file_name,time_of_day\na.jpg,dusk\n")
    with pytest.raises(DataError, match=r"captions\.csv: line 2: broken record: meta\.time_of_day must be one of"):
        load_samples("folder", tmp_path)


def test_box_outside_image_names_file_line_and_object(tmp_path):
    _img(tmp_path / "a.jpg", (40, 30))
    _jsonl(tmp_path / "captions.jsonl", [{"file_name": "a.jpg", "objects": [{"label": "Person", "box": [35, 5, 10, 10]}]}])
    with pytest.raises(DataError, match=r"line 1: objects\[0\]: box outside image"):
        load_samples("folder", tmp_path)
    samples, report = load_samples("folder", tmp_path, skip_invalid=True)
    assert report.counts == {"box outside image": 1} and samples[0].boxes == []


def test_unreadable_image_is_an_error_or_a_counted_skip(tmp_path):
    _img(tmp_path / "a.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: unreadable image: .*empty file"):
        load_samples("folder", tmp_path)
    samples, report = load_samples("folder", tmp_path, skip_invalid=True)
    assert report.counts == {"unreadable image": 1} and [s.image_id for s in samples] == ["a"]


def test_csv_without_an_image_column_is_an_error(tmp_path):
    _img(tmp_path / "a.jpg")
    (tmp_path / "captions.csv").write_text("caption\nhello\n")
    with pytest.raises(DataError, match=r"captions\.csv: line 1: the CSV header needs an image column"):
        load_samples("folder", tmp_path)


def test_several_captions_files_are_ambiguous(tmp_path):
    _img(tmp_path / "a.jpg")
    (tmp_path / "captions.csv").write_text("file_name\na.jpg\n")
    _jsonl(tmp_path / "captions.jsonl", [{"file_name": "a.jpg"}])
    with pytest.raises(DataError, match="several captions files"):
        load_samples("folder", tmp_path)
