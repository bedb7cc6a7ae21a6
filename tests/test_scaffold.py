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
    for name in ("checkpoint-40", "checkpoint-50", "checkpoint-60"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-50" / "done").touch()
    (tmp_path / "checkpoint-60" / "done").touch()
    # only the accepted ones count and go, and never the one kept: 30 and 40 (not accepted) stay
    assert [p.name for p in rotate_checkpoints(tmp_path, 1, only=lambda c: (c / "done").is_file(),
                                               keep=tmp_path / "checkpoint-50")] == ["checkpoint-60"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-30", "checkpoint-40", "checkpoint-50"]


def test_tracker_config_flattens_settings_to_scalars():
    cfg = {"base_stage": {"steps": 3, "lr": 0.1}, "lora": {"towers": ["vision", "text"]}, "augment": {}, "base": None,
           "mixed_precision": "no"}
    assert tracker_config(cfg) == {"base_stage.steps": 3, "base_stage.lr": 0.1, "lora.towers": '["vision", "text"]',
                                   "augment": "{}", "base": None, "mixed_precision": "no"}


def test_checkpointer_saves_rotates_and_resumes_only_complete_checkpoints(tmp_path):
    """Checkpointer, the one checkpoint path of the T-CLIP, VAE and UNet loops: accelerate's state, the lr schedule,
    the loop's meta and tensors, a marker written last; rotation after the new checkpoint is whole; a resume takes
    the newest complete checkpoint and restores all of it."""
    import torch
    from diffusers.optimization import get_scheduler

    from tclip.scaffold import CHECKPOINT_MARKER, Checkpointer

    def run():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        sched = get_scheduler("linear", opt, num_warmup_steps=1, num_training_steps=10)
        acc = Accelerator(cpu=True)
        model, opt = acc.prepare(model, opt)
        return acc, model, opt, sched

    acc, model, opt, sched = run()
    ck = Checkpointer(acc, tmp_path / "ck", limit=2, lr_scheduler=sched)
    assert ck.find("latest") is None and ck.find(False) is None
    gen = torch.Generator().manual_seed(5)
    for step in range(1, 5):
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 2 == 0 or step == 3:
            torch.rand(step, generator=gen)
            ck.save(step, {"rows": [step]}, {"gen": gen.get_state()})
    assert [p.name for p in ck.complete()] == ["checkpoint-3", "checkpoint-4"]  # the limit, oldest removed
    want = {k: v.clone() for k, v in acc.unwrap_model(model).state_dict().items()}
    want_lr, want_gen = sched.get_last_lr(), torch.rand(3, generator=gen)

    (ck.path(4) / CHECKPOINT_MARKER).unlink()  # as if killed while saving step 4
    assert ck.find(True) == ck.path(3)
    with pytest.raises(FileNotFoundError, match="checkpoint-4 is not a complete checkpoint"):
        ck.find(ck.path(4))
    with pytest.raises(FileNotFoundError, match="checkpoint-9 does not exist"):
        ck.find(tmp_path / "ck" / "checkpoint-9")

    acc2, model2, opt2, sched2 = run()
    ck2 = Checkpointer(acc2, tmp_path / "ck", lr_scheduler=sched2)
    (ck.path(4) / CHECKPOINT_MARKER).write_text(json.dumps({"step": 4, "rows": [4]}))
    step, meta, tensors = ck2.load(ck2.find("latest"))
    assert step == 4 and meta == {"step": 4, "rows": [4]} and sched2.get_last_lr() == want_lr
    assert all(torch.equal(v, want[k]) for k, v in acc2.unwrap_model(model2).state_dict().items())
    g2 = torch.Generator()
    g2.set_state(tensors["gen"])
    assert torch.equal(torch.rand(3, generator=g2), want_gen)


def test_checkpointer_rotates_complete_checkpoints_only_and_never_the_new_one(tmp_path, caplog):
    """Folders without the marker (an interrupted save, an older thermgen's checkpoint) are neither resumed from nor
    counted by the rotation: a run restarted under them keeps its new checkpoints. Saving a step again replaces its
    folder, stale files included."""
    import logging

    import torch

    from tclip.scaffold import CHECKPOINT_MARKER, Checkpointer

    acc = Accelerator(cpu=True)
    model = acc.prepare(torch.nn.Linear(2, 2))
    folder = tmp_path / "ck"
    for old in ("checkpoint-1000", "checkpoint-1200"):  # an older run's, without markers
        (folder / old).mkdir(parents=True)
    ck = Checkpointer(acc, folder, limit=2)
    with caplog.at_level(logging.WARNING, logger="tclip.scaffold"):
        assert ck.find("latest") is None
    assert "2 checkpoint folder(s) without checkpoint.json" in caplog.text
    for step in (200, 400, 600):
        ck.save(step)
    assert [p.name for p in ck.complete()] == ["checkpoint-400", "checkpoint-600"]
    assert [p.name for p in ck.incomplete()] == ["checkpoint-1000", "checkpoint-1200"]  # left in place

    (ck.path(400) / "loop_state.safetensors").write_text("stale")
    ck.save(400, {"again": True})  # resumed from 400 and saved it again: the folder is rewritten
    assert not (ck.path(400) / "loop_state.safetensors").exists()
    assert json.loads((ck.path(400) / CHECKPOINT_MARKER).read_text()) == {"step": 400, "again": True}
    assert [p.name for p in ck.complete()] == ["checkpoint-400", "checkpoint-600"]
    del model


def test_plot_rows_draws_columns_and_smoothing_and_skips_empty_logs(tmp_path):
    from tclip.scaffold import plot_rows

    rows = [{"step": i, "loss": 1.0 / i, "recon": 0.5 / i} for i in range(1, 41)]
    assert plot_rows(rows, tmp_path / "a.png", y=("recon", "loss"), logy=True)
    assert plot_rows(rows, tmp_path / "sub" / "b.png", y="loss", smooth=True)
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "sub" / "b.png").is_file()
    assert not plot_rows([{"step": 1, "loss": float("nan")}], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
