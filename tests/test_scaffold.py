"""tclip.scaffold: the accelerate trackers every training loop logs through (CSV always, TensorBoard on request)."""

from __future__ import annotations

import json

import pytest
from accelerate import Accelerator

from tclip.scaffold import CSVTracker, csv_tracker, make_trackers, plot_csv_curves, read_csv_log, tracker_config


def test_csv_tracker_logs_through_accelerate_and_a_resume_drops_the_interrupted_tail(tmp_path):
    acc = Accelerator(cpu=True, log_with=make_trackers("run", tmp_path, filename="log.csv"))
    acc.init_trackers("run", config={"lr": 0.1, "name": "x"})
    for step in range(1, 6):
        acc.log({"stage": "base", "loss": 1.0 / step}, step=step)
    assert json.loads((tmp_path / "log.config.json").read_text()) == {"lr": 0.1, "name": "x"}
    rows = read_csv_log(tmp_path / "log.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[1] == {"step": 2, "stage": "base", "loss": 0.5}
    with pytest.raises(ValueError, match=r"log\.csv: logged key\(s\) \['acc'\]"):
        acc.log({"loss": 0.1, "acc": 1.0}, step=6)

    # resumed from a checkpoint at step 3: the file is kept, rows past 3 go, and the run logs 4, 5 again
    resumed = CSVTracker("run", tmp_path, "log.csv", fresh=False)
    resumed.start()
    assert resumed.drop_rows(lambda r: r["step"] > 3) == 2
    resumed.log({"stage": "base", "loss": 0.25}, step=4)
    assert [r["step"] for r in read_csv_log(tmp_path / "log.csv")] == [1, 2, 3, 4]
    # a fresh run starts a new file
    fresh = CSVTracker("run", tmp_path, "log.csv")
    fresh.start()
    assert not (tmp_path / "log.csv").exists()

    assert plot_csv_curves(tmp_path / "none.csv", tmp_path / "x.png") is False
    resumed.log({"stage": "fine", "loss": 0.3}, step=1)
    assert plot_csv_curves(tmp_path / "log.csv", tmp_path / "curve.png", by="stage")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_make_trackers_adds_tensorboard_only_when_asked_and_installed(tmp_path, caplog):
    from accelerate.utils import is_tensorboard_available

    assert [t.name for t in make_trackers("r", tmp_path)] == ["csv"]
    names = [t.name for t in make_trackers("r", tmp_path, report_to="tensorboard")]
    assert names == (["csv", "tensorboard"] if is_tensorboard_available() else ["csv"])
    if not is_tensorboard_available():
        assert "tensorboard is not installed" in caplog.text
    with pytest.raises(ValueError, match="report_to"):
        make_trackers("r", tmp_path, report_to="wandb")
    acc = Accelerator(cpu=True, log_with=make_trackers("r", tmp_path))
    acc.init_trackers("r")
    assert isinstance(csv_tracker(acc), CSVTracker)


def test_checkpoints_are_listed_by_step_and_rotated_to_the_limit(tmp_path):
    from tclip.scaffold import checkpoint_step, list_checkpoints, rotate_checkpoints

    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-x", "step-5", "checkpoint-30"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-7").write_text("a file, not a checkpoint")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-30"]
    assert [checkpoint_step(p, "step-") for p in list_checkpoints(tmp_path, prefix="step-")] == [5]
    assert rotate_checkpoints(tmp_path, None) == []
    # room for one more save under a limit of 2: only the newest stays
    assert [p.name for p in rotate_checkpoints(tmp_path, 2)] == ["checkpoint-2", "checkpoint-10"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-30"]
    assert list_checkpoints(tmp_path / "missing") == []


def test_tracker_config_flattens_settings_to_scalars():
    cfg = {"base_stage": {"steps": 3, "lr": 0.1}, "lora": {"towers": ["vision", "text"]}, "augment": {}, "base": None,
           "mixed_precision": "no"}
    assert tracker_config(cfg) == {"base_stage.steps": 3, "base_stage.lr": 0.1, "lora.towers": '["vision", "text"]',
                                   "augment": "{}", "base": None, "mixed_precision": "no"}
