"""python -m thermgen.bench.grid: the fixed day/night x cars x altitude prompt grid of a model."""

from __future__ import annotations

import json

import numpy as np

from thermgen.bench.grid import CELLS, main, pick_records


def _record(i: int, split: str, tod: str, cars: int, alt: float, people: int = 0) -> dict:
    objs = [{"label": "Car", "box": [1, 1, 4, 4], "facts": {}}] * cars + \
           [{"label": "Person", "box": [2, 2, 2, 2], "facts": {}}] * people
    return {"schema_version": 1, "id": f"t/{split}/{i:03d}", "image": f"img{i:03d}.png", "split": split,
            "source": "hit-uav", "width": 20, "height": 16,
            "global_caption": f"An infrared thermal image at {'night' if tod == 'night' else 'day'} with {cars} cars.",
            "fine_caption": f"Fine caption {i}.", "objects": objs,
            "meta": {"time_of_day": tod, "altitude_m": alt, "view_angle_deg": 60}, "measurements": {},
            "captioner": {"name": "rules", "version": "1", "seed": 0}}


def test_each_cell_takes_the_first_record_of_the_split_with_its_attributes():
    recs = [_record(3, "test", "day", 2, 60), _record(1, "test", "day", 3, 70), _record(2, "train", "day", 1, 60),
            _record(4, "test", "night", 7, 120), _record(5, "test", "night", 0, 60)]
    picked = dict(pick_records(recs, "test"))
    assert picked[("day", "1-5", "low")]["id"] == "t/test/001"  # first by id, not by file order; train ignored
    assert picked[("night", "6+", "high")]["id"] == "t/test/004"
    assert sum(r is not None for r in picked.values()) == 2 and len(picked) == len(CELLS) == 8


def test_grid_command_writes_the_png_and_its_prompts(tmp_path, capsys):
    from pipelines.testing import tiny_pipeline
    from thermgen.io import write_png16

    tiny_pipeline(mode="fused").save_pretrained(tmp_path / "pipe")
    recs = [_record(1, "test", "day", 2, 60), _record(2, "test", "night", 8, 120)]
    for r in recs:
        write_png16(tmp_path / r["image"], (np.random.default_rng(0).random((16, 20)) * 65535).astype(np.uint16))
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "grid.png"
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--pipeline", str(tmp_path / "pipe"),
                 "--seeds", "0", "1", "--steps", "2", "--real-column"]) == 0
    from PIL import Image

    assert Image.open(out).mode == "L"
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["real_column"] is True
    wide = Image.open(out).size[0]
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--pipeline", str(tmp_path / "pipe"),
                 "--seeds", "0", "1", "--steps", "2"]) == 0
    assert Image.open(out).size[0] < wide  # no dataset pixels unless asked
    side = json.loads(out.with_suffix(".json").read_text())
    assert [c["record"] for c in side["cells"]] == ["t/test/001", "t/test/002"]
    assert side["cells"][1]["prompt"] == recs[1]["global_caption"] and len(side["missing_cells"]) == 6
    printed = capsys.readouterr().out
    assert "row left out" in printed and "2 prompts x 2 seeds" in printed
    # --contrast-scale: each row's contrast prompt is its record with the time of day edited (rendered from its
    # IR-Cap facts, so the records need their measurements)
    from thermgen.ircap.measure import measure_image

    for r in recs:
        img = np.random.default_rng(0).random((16, 20))
        r["measurements"] = measure_image(img, [o["box"] for o in r["objects"]])
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--pipeline", str(tmp_path / "pipe"),
                 "--seeds", "0", "1", "--steps", "2"]) == 0
    plain = np.asarray(Image.open(out))
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--pipeline", str(tmp_path / "pipe"),
                 "--seeds", "0", "1", "--steps", "2", "--contrast-scale", "2"]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["contrast_scale"] == 2.0
    assert "day" in side["cells"][1]["contrast_prompt"] and side["cells"][1]["contrast_prompt"] != side["cells"][1]["prompt"]
    assert not np.array_equal(np.asarray(Image.open(out)), plain)


def test_grid_command_names_a_manifest_without_any_cell(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_text(json.dumps(_record(1, "train", "day", 2, 60)) + "\n")
    assert main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "g.png"),
                 "--pipeline", str(tmp_path)]) == 2
    assert "fills any cell" in capsys.readouterr().err
