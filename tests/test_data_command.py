"""`python -m thermgen.data`: per-split counts, skips and metadata tallies; synthetic generation."""

import json
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thermgen.data.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def _run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_hit_uav_json_reports_every_image_and_box_of_every_split(hit_uav_root):
    # The real command line, in a fresh interpreter, exactly as a user runs it.
    out = subprocess.run(
        [sys.executable, "-m", "thermgen.data", "--source", "hit-uav", "--root", str(hit_uav_root), "--json"],
        capture_output=True, text=True, cwd=REPO, check=True,
    ).stdout
    summary = json.loads(out)
    ann = hit_uav_root / "normal_json" / "annotations"
    total_images = 0
    for split in ("train", "val", "test"):
        data = json.loads((ann / f"{split}.json").read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        got = summary["splits"][split]
        assert got["images"] == len(data["images"]), split
        assert got["boxes"] == len(data["annotation"]), split
        assert got["boxes_per_label"] == dict(Counter(names[a["category_id"]] for a in data["annotation"])), split
        with_boxes = {a["image_id"] for a in data["annotation"]}
        assert got["images_without_boxes"] == sum(1 for im in data["images"] if im["id"] not in with_boxes)
        assert got["skipped"] == {"total": 0, "counts": {}, "examples": {}}
        # metadata parsed for every file name: tallies agree with the names, nothing unknown
        fields = [im["filename"][:-4].split("_") for im in data["images"]]
        assert got["meta"]["time_of_day"] == dict(sorted(Counter({"0": "day", "1": "night"}[f[0]] for f in fields).items()))
        assert got["meta"]["weather"] == dict(Counter({"0": "clear", "1": "rain"}[f[3]] for f in fields))
        assert got["meta"]["altitude_m"] == {k: v for k, v in sorted(Counter(f[1] for f in fields).items(), key=lambda kv: int(kv[0]))}
        assert got["meta"]["view_angle_deg"] == {k: v for k, v in sorted(Counter(f[2] for f in fields).items(), key=lambda kv: int(kv[0]))}
        total_images += len(data["images"])
    assert summary["total"]["images"] == total_images
    assert list(summary["splits"]) == ["train", "val", "test"]


def test_split_flag_limits_the_summary(capsys, hit_uav_root):
    summary = _run_json(capsys, ["--source", "hit-uav", "--root", str(hit_uav_root), "--split", "val", "--json"])
    assert list(summary["splits"]) == ["val"] and summary["total"]["images"] == summary["splits"]["val"]["images"]


def test_table_lists_splits_labels_and_metadata(capsys, hit_uav_root):
    assert main(["--source", "hit-uav", "--root", str(hit_uav_root)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("split"))
    for word in ("images", "boxes", "Person", "Car", "Bicycle", "OtherVehicle", "DontCare", "skipped"):
        assert word in header
    for name in ("train", "val", "test", "total"):
        assert any(line.startswith(name) for line in out.splitlines())
    assert "time_of_day" in out and "night" in out and "altitude_m" in out


def _bad_hituav(root: Path) -> Path:
    base = root / "normal_json"
    (base / "annotations").mkdir(parents=True)
    cats = [{"id": 0, "name": "Person"}, {"id": 1, "name": "Car"}]
    for split, ann in (("train", [[70, 1, 5, 5], [1, 1, 5, 5]]), ("val", [[1, 1, 5, 5]])):
        (base / split).mkdir()
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(base / split / f"0_60_90_0_{split}.jpg")
        images = [{"filename": f"0_60_90_0_{split}.jpg", "width": 64, "height": 48, "id": 1}]
        anns = [{"id": i, "image_id": 1, "category_id": 0, "bbox": b} for i, b in enumerate(ann)]
        (base / "annotations" / f"{split}.json").write_text(json.dumps({"images": images, "categories": cats, "annotation": anns}))
    return root


def test_skip_invalid_reports_skips_against_their_split(capsys, tmp_path):
    summary = _run_json(capsys, ["--source", "hit-uav", "--root", str(_bad_hituav(tmp_path)), "--json", "--skip-invalid"])
    assert summary["splits"]["train"]["skipped"]["counts"] == {"box outside image": 1}
    assert summary["splits"]["val"]["skipped"]["total"] == 0
    assert summary["total"]["skipped"]["total"] == 1 and summary["total"]["skipped_without_split"] == 0
    assert summary["splits"]["train"]["boxes"] == 1


def test_without_skip_invalid_a_bad_record_stops_with_its_file_and_record(capsys, tmp_path):
    assert main(["--source", "hit-uav", "--root", str(_bad_hituav(tmp_path)), "--json"]) == 1
    err = capsys.readouterr().err
    assert "train.json: annotation[0] (id=0, image_id=1): box outside image" in err


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--source", "--root", "--split", "--json", "--skip-invalid", "--out", "--n", "--size", "--seed"):
        assert flag in out


def test_root_is_required_to_read(capsys):
    with pytest.raises(SystemExit):
        main(["--source", "coco"])
    assert "--root is required" in capsys.readouterr().err


def test_synthetic_generation_delegates_to_the_synthetic_module(capsys, tmp_path, monkeypatch):
    calls = []

    def generate(out, n, size, seed, scene_options):
        calls.append({"out": Path(out), "n": n, "size": size, "seed": seed, "scene_options": scene_options})
        Path(out).mkdir(parents=True)
        return Path(out)

    def load(root, split, report, skip_invalid=False):
        return []

    fake = types.ModuleType("thermgen.data.synthetic")
    fake.generate, fake.load = generate, load
    monkeypatch.setitem(sys.modules, "thermgen.data.synthetic", fake)
    summary = _run_json(capsys, ["--source", "synthetic", "--n", "7", "--size", "48", "--seed", "3", "--out", str(tmp_path / "s"), "--json"])
    assert calls == [{"out": tmp_path / "s", "n": 7, "size": 48, "seed": 3, "scene_options": {}}]
    assert summary["source"] == "synthetic" and summary["total"]["images"] == 0
    _run_json(capsys, ["--source", "synthetic", "--n", "2", "--out", str(tmp_path / "t"), "--altitude", "60", "130",
                       "--view-angle", "30", "90", "--object-scale", "1.7", "--json"])
    assert calls[-1]["scene_options"] == {"altitude_range_m": [60.0, 130.0], "view_angle_range_deg": [30.0, 90.0], "object_scale": 1.7}


def test_out_is_only_for_synthetic(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["--source", "coco", "--out", str(tmp_path), "--n", "3"])
    assert "only with --source synthetic" in capsys.readouterr().err


def test_synthetic_dataset_is_generated_and_summarised(capsys, tmp_path):
    pytest.importorskip("thermgen.data.synthetic")
    summary = _run_json(capsys, ["--source", "synthetic", "--n", "5", "--size", "16", "--out", str(tmp_path / "s"), "--json"])
    assert summary["total"]["images"] == 5
    assert summary["total"]["radiometric"] == 5
    again = _run_json(capsys, ["--source", "synthetic", "--root", str(tmp_path / "s"), "--json"])
    assert again["total"] == summary["total"]
    with pytest.raises(SystemExit):  # a flight envelope no view fits is named, nothing written
        main(["--source", "synthetic", "--n", "2", "--out", str(tmp_path / "u"), "--altitude", "300", "400"])
    assert "no view of the synthetic scenes fits" in capsys.readouterr().err and not (tmp_path / "u").exists()


def test_load_samples_rejects_an_unknown_source_naming_the_choices():
    from thermgen.data import load_samples

    with pytest.raises(ValueError, match="unknown source 'flir'; choose one of hit-uav, coco, voc, kaist, folder, synthetic"):
        load_samples("flir", ".")


def test_load_samples_names_a_missing_root(tmp_path):
    from thermgen.data import DataError, load_samples

    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'}: dataset root does not exist"):
        load_samples("coco", tmp_path / "nowhere")
