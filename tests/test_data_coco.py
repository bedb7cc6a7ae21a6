"""COCO adapter on small fixtures in the real FLIR ADAS v1 and v2 thermal layouts."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thermgen.data import list_splits, load_samples
from thermgen.data.sample import DataError

W, H = 64, 48


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W), 100, np.uint8)).save(path)


def make_flir_v1(root: Path, val_annotations: list[dict] | None = None) -> Path:
    """FLIR_ADAS_1_3: <split>/thermal_annotations.json, file names "thermal_8_bit/FLIR_xxxxx.jpeg", ids from 0."""
    cats = [
        {"id": 1, "name": "person", "supercategory": "unknown"},
        {"id": 2, "name": "bicycle", "supercategory": "unknown"},
        {"id": 3, "name": "car", "supercategory": "unknown"},
        {"id": 18, "name": "dog", "supercategory": "unknown"},
        {"id": 91, "name": "other vehicle", "supercategory": "unknown"},
    ]
    layout = {"train": ["FLIR_00001", "FLIR_00002"], "val": ["FLIR_08863"]}
    for split, stems in layout.items():
        images = []
        for i, stem in enumerate(stems):
            _jpeg(root / split / "thermal_8_bit" / f"{stem}.jpeg")
            images.append({"id": i, "width": W, "height": H, "file_name": f"thermal_8_bit/{stem}.jpeg"})
        anns = [
            {"id": 0, "image_id": 0, "category_id": 1, "segmentation": [[10, 10, 14, 10, 14, 30, 10, 30]], "area": 80.0, "bbox": [10, 10, 4, 20], "iscrowd": 0},
            {"id": 1, "image_id": 0, "category_id": 3, "segmentation": [], "area": 300.0, "bbox": [30, 20, 20, 15], "iscrowd": 0},
        ]
        if split == "val" and val_annotations is not None:
            anns = val_annotations
        data = {"info": {"year": 2018}, "licenses": [], "categories": cats, "images": images, "annotations": anns}
        (root / split / "thermal_annotations.json").write_text(json.dumps(data))
    return root


def make_flir_v2(root: Path) -> Path:
    """FLIR_ADAS_v2: images_thermal_{train,val}/coco.json, video_thermal_test/coco.json; RGB folders beside them."""
    cats = [{"id": 1, "name": "person", "supercategory": "unknown"}, {"id": 2, "name": "bike", "supercategory": "unknown"}, {"id": 3, "name": "car", "supercategory": "unknown"}]
    for folder in ("images_thermal_train", "images_thermal_val", "video_thermal_test", "images_rgb_train"):
        name = f"video-aBc{folder[-3:]}-frame-000100-xYz.jpg"
        _jpeg(root / folder / "data" / name)
        data = {
            "info": {"description": "FLIR ADAS v2"},
            "categories": cats,
            "images": [{"id": 0, "width": W, "height": H, "file_name": f"data/{name}", "extra_info": {"video_id": "aBc"}}],
            "annotations": [{"id": 0, "image_id": 0, "category_id": 2, "bbox": [5.0, 6.0, 7.0, 8.0], "area": 56.0, "iscrowd": 0, "extra_info": {"human_annotated": True}}],
        }
        (root / folder / "coco.json").write_text(json.dumps(data))
    return root


def test_flir_v1_layout_is_read_per_split(tmp_path):
    samples, report = load_samples("coco", make_flir_v1(tmp_path))
    assert report.total == 0
    assert sorted((s.split, s.image_id, len(s.boxes)) for s in samples) == [
        ("train", "FLIR_00001", 2),
        ("train", "FLIR_00002", 0),
        ("val", "FLIR_08863", 2),
    ]
    first = next(s for s in samples if s.image_id == "FLIR_00001")
    assert [(b.label, b.xywh) for b in first.boxes] == [("person", (10.0, 10.0, 4.0, 20.0)), ("car", (30.0, 20.0, 20.0, 15.0))]
    assert first.image_path == (tmp_path / "train" / "thermal_8_bit" / "FLIR_00001.jpeg").resolve()
    assert (first.width, first.height, first.source, first.meta) == (W, H, "coco", {})


def test_flir_v2_layout_maps_folders_to_splits_and_ignores_rgb(tmp_path):
    root = make_flir_v2(tmp_path)
    assert list_splits("coco", root) == ["train", "val", "test"]
    samples, _ = load_samples("coco", root)
    assert sorted(s.split for s in samples) == ["test", "train", "val"]
    assert all(s.boxes[0].label == "bike" and s.boxes[0].xywh == (5.0, 6.0, 7.0, 8.0) for s in samples)
    assert all("thermal" in s.image_path.parts[-3] for s in samples)


def test_single_annotation_file_can_be_the_root(tmp_path):
    root = make_flir_v2(tmp_path)
    samples, _ = load_samples("coco", root / "images_thermal_val" / "coco.json")
    assert [s.split for s in samples] == ["val"]


def test_iscrowd_boxes_are_kept_and_marked_ignore(tmp_path):
    anns = [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 1}]
    samples, _ = load_samples("coco", make_flir_v1(tmp_path, anns), split="val")
    assert samples[0].boxes[0].attrs == {"ignore": True, "iscrowd": True}


def test_box_outside_image_names_file_and_record(tmp_path):
    anns = [{"id": 7, "image_id": 0, "category_id": 1, "bbox": [50, 40, 30, 30], "iscrowd": 0}]
    root = make_flir_v1(tmp_path, anns)
    with pytest.raises(DataError, match=r"val/thermal_annotations\.json: annotations\[0\] \(id=7, image_id=0\): box outside image"):
        load_samples("coco", root)
    samples, report = load_samples("coco", root, skip_invalid=True)
    assert report.counts == {"box outside image": 1} and len(samples) == 3


def test_unknown_label_names_file_and_record(tmp_path):
    anns = [{"id": 7, "image_id": 0, "category_id": 44, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    root = make_flir_v1(tmp_path, anns)
    with pytest.raises(DataError, match=r"annotations\[0\] \(id=7, image_id=0\): unknown label: category_id 44"):
        load_samples("coco", root)
    _, report = load_samples("coco", root, skip_invalid=True)
    assert report.counts == {"unknown label": 1}


def test_missing_image_names_file_and_record(tmp_path):
    root = make_flir_v1(tmp_path)
    (root / "train" / "thermal_8_bit" / "FLIR_00002.jpeg").unlink()
    with pytest.raises(DataError, match=r"train/thermal_annotations\.json: images\[1\] \(id=1, file_name='thermal_8_bit/FLIR_00002\.jpeg'\): missing image"):
        load_samples("coco", root)
    samples, report = load_samples("coco", root, skip_invalid=True)
    assert report.counts == {"missing image": 1} and len(samples) == 2


def test_broken_record_names_file_and_record(tmp_path):
    anns = [{"id": 7, "image_id": 0, "bbox": [1, 1, 5, 5]}, {"id": 8, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    root = make_flir_v1(tmp_path, anns)
    with pytest.raises(DataError, match=r"annotations\[0\] \(id=7, image_id=0\): broken record: missing 'category_id'"):
        load_samples("coco", root)
    _, report = load_samples("coco", root, skip_invalid=True)
    assert report.counts == {"broken record": 2}  # the second names an image that is not listed


def test_truncated_annotation_file_names_the_file(tmp_path):
    root = make_flir_v1(tmp_path)
    path = root / "val" / "thermal_annotations.json"
    path.write_text(path.read_text()[:50])
    with pytest.raises(DataError, match=r"val/thermal_annotations\.json: line 1 column \d+: not valid JSON"):
        load_samples("coco", root, split="val")


def test_root_without_annotations_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no COCO annotation file found"):
        load_samples("coco", tmp_path)
