"""VOC adapter on small fixtures in LLVIP's real layout and XML schema, and a plain VOC layout."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thermgen.data import list_splits, load_samples
from thermgen.data.sample import DataError
from thermgen.io import read_thermal

W, H = 64, 48


def llvip_xml(stem: str, objects: list[tuple], width: int = W, height: int = H) -> str:
    """An LLVIP annotation (labelImg-style VOC XML)."""
    objs = "".join(
        f"""
\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>{difficult}</difficult>
\t\t<bndbox>
\t\t\t<xmin>{x0}</xmin>
\t\t\t<ymin>{y0}</ymin>
\t\t\t<xmax>{x1}</xmax>
\t\t\t<ymax>{y1}</ymax>
\t\t</bndbox>
\t</object>"""
        for name, x0, y0, x1, y1, difficult in objects
    )
    return f"""<annotation>
\t<folder>000000</folder>
\t<filename>{stem}.jpg</filename>
\t<source>
\t\t<database>Unknown</database>
\t</source>
\t<size>
\t\t<width>{width}</width>
\t\t<height>{height}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>{objs}
</annotation>
"""


def _ir_jpeg(path: Path) -> None:
    # LLVIP's infrared frames are 3-channel JPEGs with equal channels
    path.parent.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0).integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(np.stack([g, g, g], -1)).save(path)


def make_llvip(root: Path, annotations: dict[str, list[tuple]] | None = None) -> Path:
    annotations = annotations or {
        "010001": [("person", 11, 21, 20, 40, 0), ("person", 31, 5, 40, 30, 1)],
        "010002": [],
        "190001": [("person", 1, 1, 64, 48, 0)],
    }
    (root / "Annotations").mkdir(parents=True)
    for stem, objs in annotations.items():
        split = "test" if stem.startswith("19") else "train"
        _ir_jpeg(root / "infrared" / split / f"{stem}.jpg")
        _ir_jpeg(root / "visible" / split / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(llvip_xml(stem, objs))
    return root


def test_llvip_splits_come_from_the_infrared_folders(tmp_path):
    assert list_splits("voc", make_llvip(tmp_path)) == ["train", "test"]


def test_llvip_is_read_with_1_based_corners_converted(tmp_path):
    samples, report = load_samples("voc", make_llvip(tmp_path))
    assert report.total == 0
    by_id = {s.image_id: s for s in samples}
    assert {k: s.split for k, s in by_id.items()} == {"010001": "train", "010002": "train", "190001": "test"}
    a = by_id["010001"]
    assert a.image_path == (tmp_path / "infrared" / "train" / "010001.jpg").resolve()
    assert [(b.label, b.xywh) for b in a.boxes] == [("person", (10.0, 20.0, 10.0, 20.0)), ("person", (30.0, 4.0, 10.0, 26.0))]
    assert by_id["190001"].boxes[0].xywh == (0.0, 0.0, 64.0, 48.0)  # full-frame box fits exactly
    assert by_id["010002"].boxes == []


def test_difficult_objects_are_kept_and_marked_ignore(tmp_path):
    samples, _ = load_samples("voc", make_llvip(tmp_path), split="train")
    boxes = next(s for s in samples if s.image_id == "010001").boxes
    assert boxes[0].attrs == {} and boxes[1].attrs == {"difficult": True, "ignore": True}


def test_llvip_infrared_frames_read_as_grey(tmp_path):
    samples, _ = load_samples("voc", make_llvip(tmp_path), split="test")
    img = read_thermal(samples[0].image_path)
    assert img.shape == (samples[0].height, samples[0].width)


def test_box_outside_image_names_file_and_object(tmp_path):
    root = make_llvip(tmp_path, {"010001": [("person", 50, 10, 90, 30, 0)]})
    with pytest.raises(DataError, match=r"010001\.xml: object\[0\] \(person\): box outside image"):
        load_samples("voc", root)
    samples, report = load_samples("voc", root, skip_invalid=True)
    assert report.counts == {"box outside image": 1} and samples[0].boxes == []


def test_unknown_label_names_file_and_object(tmp_path):
    root = make_llvip(tmp_path, {"010001": [("person", 1, 1, 5, 5, 0), ("car", 1, 1, 5, 5, 0)]})
    with pytest.raises(DataError, match=r"010001\.xml: object\[1\] \(car\): unknown label"):
        load_samples("voc", root)
    samples, report = load_samples("voc", root, skip_invalid=True)
    assert report.counts == {"unknown label": 1} and len(samples[0].boxes) == 1


def test_missing_image_names_the_annotation_file(tmp_path):
    root = make_llvip(tmp_path)
    (root / "infrared" / "train" / "010002.jpg").unlink()
    with pytest.raises(DataError, match=r"010002\.xml: missing image"):
        load_samples("voc", root)
    samples, report = load_samples("voc", root, skip_invalid=True)
    assert report.counts == {"missing image": 1} and len(samples) == 2


def test_image_without_annotation_is_reported(tmp_path):
    root = make_llvip(tmp_path)
    (root / "Annotations" / "190001.xml").unlink()
    with pytest.raises(DataError, match=r"infrared/test/190001\.jpg: missing annotation"):
        load_samples("voc", root)
    _, report = load_samples("voc", root, skip_invalid=True)
    assert report.counts == {"missing annotation": 1}


def test_broken_xml_names_file_and_line(tmp_path):
    root = make_llvip(tmp_path)
    (root / "Annotations" / "010002.xml").write_text("<annotation>\n<size><width>64</width>\n")
    with pytest.raises(DataError, match=r"010002\.xml: line \d+ column \d+: broken record: not valid XML"):
        load_samples("voc", root)
    _, report = load_samples("voc", root, skip_invalid=True)
    assert report.counts == {"broken record": 1}


def test_broken_object_record_names_file_and_object(tmp_path):
    root = make_llvip(tmp_path, {"010001": [("person", 1, 1, "abc", 5, 0)]})
    with pytest.raises(DataError, match=r"010001\.xml: object\[0\] \(person\): broken record: <bndbox> needs numeric"):
        load_samples("voc", root)


def test_plain_voc_layout_with_imagesets(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    for stem in ("a", "b"):
        Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "JPEGImages" / f"{stem}.png")
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(llvip_xml(stem, [("car", 2, 2, 10, 10, 0)]).replace(".jpg", ".png"))
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    (tmp_path / "ImageSets" / "Main" / "car_train.txt").write_text("a 1\n")  # per-class list, not a split
    assert list_splits("voc", tmp_path) == ["train", "val"]
    samples, _ = load_samples("voc", tmp_path)
    assert sorted((s.split, s.image_id, s.boxes[0].label) for s in samples) == [("train", "a", "car"), ("val", "b", "car")]


def test_root_without_annotations_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="Annotations: not found"):
        load_samples("voc", tmp_path)
