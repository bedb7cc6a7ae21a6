"""The recipe runner (python -m thermgen.train): outputs, stage skipping, reruns, resume, bad overrides."""

import json
import shutil

import re

import pytest

from thermgen.train.config import load_config
from thermgen.train.recipe import STAGE_NAMES, main, run_recipe

# The whole recipe at toy sizes: 40 synthetic scenes at 32 px, a few steps per stage.
TINY_RECIPE = [
    "run.device=cpu",
    "data.synthetic_n=40",
    "data.synthetic_size=32",
    "captions.variants=2",
    "tclip.train={base_stage: {steps: 2, batch_size: 8}, adapter_stage: {steps: 2, batch_size: 8}}",
    "vae.train={steps: 2, batch_size: 8, block_out_channels: [8, 16, 32], num_preview: 2}",
    "unet.block_out_channels=[32, 64]",
    "unet.cross_attention_dim=32",
    "unet.norm_num_groups=8",
    "train.resolution=32",
    "train.train_batch_size=8",
    "train.max_train_steps=4",
    "train.checkpointing_steps=2",
    "train.validation_steps=100",
    "train.validation_images_per_prompt=1",
    "train.validation_inference_steps=2",
    "eval.num_inference_steps=2",
    "eval.max_test_prompts=4",
    "eval.contrast_images_per_prompt=2",
    "eval.grid_prompts=2",
    "eval.feature=tclip",
]


def statuses(summary):
    return {k: v["status"] for k, v in summary["stages"].items()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("recipe") / "run"
    summary = run_recipe(load_config(None, TINY_RECIPE), run, progress=False)
    return run, summary


@pytest.fixture
def run_copy(base_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_run[0], run)
    return run


def test_recipe_writes_a_loadable_pipeline_sample_grid_and_reports(base_run):
    import tclip.text_encoder  # noqa: F401  (the text component's module, for diffusers' loader)
    from diffusers import DiffusionPipeline

    run, summary = base_run
    assert statuses(summary) == {name: "ran" for name in STAGE_NAMES}
    pipe = DiffusionPipeline.from_pretrained(run / "pipeline")
    assert type(pipe).__name__ == "ThermalDiffusionPipeline"
    assert pipe.text_encoder.config.mode == "fused"
    for name in ("samples.png", "contrast.png", "contrast.json", "contrast.md", "generation.json", "generation.md",
                 "recipe.json", "recipe.md", "data.json"):
        assert (run / "reports" / name).stat().st_size > 0, name
    unet = run / "unet"  # the training loop's own outputs: log, curve, validation grid, checkpoints
    assert (unet / "logs" / "train_log.csv").is_file() and (unet / "loss_curve.png").is_file()
    assert (unet / "validation" / "step-000004.png").is_file()
    assert sorted(d.name for d in (unet / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    gen = json.loads((run / "reports" / "generation.json").read_text())
    assert set(gen["rows"]) == {"tclip", "base_text_tower"}  # the ablation row beside the T-CLIP row
    for row in gen["rows"].values():
        assert {"fid", "kid_mean", "kid_std", "n_real", "n_fake", "feature"} <= set(row)
        assert row["n_fake"] == 4
    contrast = json.loads((run / "reports" / "contrast.json").read_text())
    assert set(contrast["generated"]) == {"day", "night", "many_cars", "few_people"}
    # The attribute judge: its ceiling on real test images, generated images graded against their records'
    # attributes, the one-fact swap test, and the day/night verdicts of the contrast report.
    judge = json.loads((run / "reports" / "judge.json").read_text())
    assert "time_of_day" in judge["ceiling"] and 0 <= judge["ceiling"]["time_of_day"]["accuracy"] <= 1
    for row in gen["rows"].values():
        over = row["over_seeds"]
        assert over["attributes"]["time_of_day"]["accuracy"]["n"] == 1
        assert over["swap"]["time_of_day"]["pairs"] == 4  # every test record, edited to day and to night
        assert row["judge"]["attributes"]["time_of_day"]["n"] == 4
    assert "Swap test" in (run / "reports" / "generation.md").read_text()
    index = json.loads((run / "eval" / "tclip" / "images" / "generation.json").read_text())["images"]
    assert [e["record_id"].split("/")[1] for e in index] == ["test"] * 4
    assert {"separation", "auc"} <= set(contrast["judge"]["generated"]) and contrast["judge"]["real"]["n"][0] > 0
    assert "Day vs night, by the attribute judge" in (run / "reports" / "contrast.md").read_text()
    assert summary["peak_rss_mb"] > 0
    first = json.loads((run / "manifest.jsonl").read_text().splitlines()[0])
    assert len(first["caption_variants"]["global"]) == 2  # captions.variants reaches the manifest T-CLIP trains on
    assert "captions per image: global 3.0, fine 3.0" in (run / "tclip" / "logs" / "train.log").read_text()


def test_judge_stage_checks_held_out_flights_when_records_come_in_flights(run_copy):
    """Synthetic scenes draw the time of day per scene, so their numbered ids make no flights: no check. Renumbered as
    two flights (every day scene, then every night one), the judge stage writes reports/judge_flights.* and the
    held-out accuracies beside its ceiling; holding out a flight leaves the other time of day only, so the time-of-day
    head cannot be refit and each of its verdicts counts as a miss. The generation report shows the row."""
    from thermgen.train.recipe import generation_markdown

    reports = run_copy / "reports"
    assert not (reports / "judge_flights.json").exists()
    assert "held_out_flights" not in json.loads((reports / "judge.json").read_text())
    lines = [json.loads(x) for x in (run_copy / "manifest.jsonl").read_text().splitlines()]
    order = sorted(range(len(lines)), key=lambda i: (lines[i]["meta"]["time_of_day"], i))
    for frame, i in enumerate(order):
        lines[i]["meta"]["frame"] = f"{frame:05d}"
    (run_copy / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = run_recipe(load_config(None, TINY_RECIPE), run_copy, rerun=("judge",), progress=False)
    assert summary["stages"]["judge"]["status"] == "ran" and summary["stages"]["evaluate"]["status"] == "ran"
    flights = json.loads((reports / "judge_flights.json").read_text())
    assert flights["n_flights"] == 2 and sum(f["n_test"] for f in flights["flights"]) == flights["n_test"]
    assert {f["time_of_day"] for f in flights["flights"]} == {"day", "night"}
    assert flights["held_out_flights"]["time_of_day"]["accuracy"] == 0.0
    assert flights["held_out_flights"]["time_of_day"]["n"] == flights["n_test"]
    judge = json.loads((reports / "judge.json").read_text())
    assert judge["held_out_flights"] == flights["held_out_flights"]
    assert set(judge["held_out_flights"]) <= set(judge["ceiling"])
    assert "| time_of_day |" in (reports / "judge_flights.md").read_text()
    gen = json.loads((reports / "generation.json").read_text())
    assert gen["judge_ceiling_held_out_flights"] == judge["held_out_flights"]
    assert "judge refit without their flight" in generation_markdown(gen)


def test_evaluation_over_two_seeds_reports_mean_std_and_seed_diversity(run_copy):
    summary = run_recipe(load_config(None, TINY_RECIPE + ["eval.seeds=[0, 1]"]), run_copy, progress=False)
    assert statuses(summary)["evaluate"] == "ran" and statuses(summary)["unet"] == "skipped (complete)"
    gen = json.loads((run_copy / "reports" / "generation.json").read_text())
    for row in gen["rows"].values():
        over = row["over_seeds"]
        assert over["attributes"]["time_of_day"]["accuracy"]["n"] == 2
        div = over["seed_diversity"]
        assert (div["seeds"], div["prompts"]) == (2, 4) and div["within"] > 0 and div["across"] > 0
        # the swap test says which side fails: the prompt as photographed, or the edited one
        for sw in over["swap"].values():
            assert sw["factual_correct"]["n"] == 2 and sw["edited_correct"]["n"] == 2
            assert sw["pairs_with_real_value"] == sw["pairs"]
    md = (run_copy / "reports" / "generation.md").read_text()
    assert "**Seed diversity**" in md and "| tclip | " in md.split("**Seed diversity**")[1]
    assert gen["rows"]["tclip"]["over_seeds"]["swap"], "the tiny recipe's synthetic test split has swap pairs"
    rows = [ln for ln in md.split("**Swap test**")[1].splitlines() if ln.startswith("| tclip |")]
    assert rows and all(ln.count("|") == 9 and "| - |" not in ln for ln in rows)


def test_evaluation_with_contrast_scale_adds_contrast_rows_of_the_same_pipelines(run_copy):
    """eval.contrast_scale: each conditioner again with contrastive guidance along the time of day, as its own row;
    the plain rows' images are reused, each contrast prompt is its record's captions with the time of day edited and
    each swap side's the other side's prompt."""
    from thermgen.ircap.swap import contrast_captions

    plain = json.loads((run_copy / "reports" / "generation.json").read_text())
    plain_index = run_copy / "eval" / "tclip" / "images" / "generation.json"
    stamp = plain_index.stat().st_mtime_ns
    summary = run_recipe(load_config(None, TINY_RECIPE + ["eval.contrast_scale=2"]), run_copy, progress=False)
    assert plain_index.stat().st_mtime_ns == stamp  # the plain rows' images were reused, not made again
    assert statuses(summary)["evaluate"] == "ran" and statuses(summary)["unet"] == "skipped (complete)"
    gen = json.loads((run_copy / "reports" / "generation.json").read_text())
    assert list(gen["rows"]) == ["tclip", "tclip+contrast", "base_text_tower", "base_text_tower+contrast"]
    for name in ("tclip", "base_text_tower"):
        assert gen["rows"][name]["fid"] == pytest.approx(plain["rows"][name]["fid"])  # plain rows unchanged
        assert gen["rows"][f"{name}+contrast"]["contrast_scale"] == 2.0
        assert gen["rows"][f"{name}+contrast"]["fid"] != gen["rows"][name]["fid"]
    index = json.loads((run_copy / "eval" / "tclip+contrast" / "images" / "generation.json").read_text())
    assert index["settings"]["contrast_scale"] == 2.0
    recs = {r["id"]: r for r in map(json.loads, (run_copy / "manifest.jsonl").read_text().splitlines())}
    for e in index["images"]:  # the time of day edited; a record without one is its own contrast (plain guidance)
        edited = contrast_captions(recs[e["record_id"]])
        assert e["contrast_prompt"] == (edited[0] if edited else e["prompt"])
        assert e["contrast_prompt_fine"] == (edited[1] if edited else e["prompt_fine"])
    assert any(contrast_captions(recs[e["record_id"]]) for e in index["images"])
    swap = run_copy / "eval" / "tclip+contrast"
    kinds = [k for k in ("time_of_day", "person", "cars") if (swap / f"swap_{k}_a").is_dir()]
    assert "time_of_day" in kinds
    for kind in kinds:
        a, b = (json.loads((swap / f"swap_{kind}_{k}" / "generation.json").read_text())["images"] for k in "ab")
        assert [e["contrast_prompt"] for e in a] == [e["prompt"] for e in b]
        assert [e["contrast_prompt"] for e in b] == [e["prompt"] for e in a]
    md = (run_copy / "reports" / "generation.md").read_text()
    assert "| tclip+contrast |" in md and "contrastive guidance along the time of day, weight 2" in md
    # back to plain guidance: the contrast rows go, the plain rows' images are reused
    summary = run_recipe(load_config(None, TINY_RECIPE), run_copy, progress=False)
    assert statuses(summary)["evaluate"] == "ran" and plain_index.stat().st_mtime_ns == stamp
    assert list(json.loads((run_copy / "reports" / "generation.json").read_text())["rows"]) == ["tclip", "base_text_tower"]
    # eval.contrast_scale=0 is off too: the same evaluation, nothing to rerun
    summary = run_recipe(load_config(None, TINY_RECIPE + ["eval.contrast_scale=0"]), run_copy, progress=False)
    assert statuses(summary)["evaluate"] == "skipped (complete)"


def test_rerun_with_the_same_config_skips_every_stage(run_copy):
    summary = run_recipe(load_config(None, TINY_RECIPE), run_copy, progress=False)
    assert statuses(summary) == {name: "skipped (complete)" for name in STAGE_NAMES}
    # the typed view of the same config is the same config
    from thermgen.train.config import load_recipe_config

    summary = run_recipe(load_recipe_config(None, TINY_RECIPE), run_copy, progress=False)
    assert statuses(summary) == {name: "skipped (complete)" for name in STAGE_NAMES}


def test_plan_names_the_stages_a_run_would_redo_and_touches_nothing(run_copy, capsys):
    """--plan: a complete run plans to skip every stage; a changed UNet key plans the UNet and what reads it (not
    the judge, which does not); --rerun plans that stage; the run folder is left as it was."""
    from thermgen.train.recipe import plan_recipe

    def snapshot():
        return {str(p.relative_to(run_copy)): p.stat().st_mtime_ns for p in run_copy.rglob("*") if p.is_file()}

    before = snapshot()
    assert {a for _, a, _ in plan_recipe(load_config(None, TINY_RECIPE), run_copy)} == {"skip"}
    plan = {n: (a, why) for n, a, why in plan_recipe(load_config(None, TINY_RECIPE + ["train.max_train_steps=2"]), run_copy)}
    assert [plan[s][0] for s in ("data", "captions", "tclip", "vae", "judge")] == ["skip"] * 5
    assert plan["unet"] == ("run", "config or an upstream stage changed")
    assert plan["contrast"] == ("run", "upstream stage unet runs") and plan["evaluate"][0] == "run"
    plan = plan_recipe(load_config(None, TINY_RECIPE), run_copy, rerun=("evaluate",), stop_after="evaluate")
    assert [n for n, a, _ in plan if a == "run"] == ["evaluate"]
    assert main(["--out", str(run_copy), "--plan", "--rerun", "tclip", *TINY_RECIPE]) == 0
    out = capsys.readouterr().out
    assert "tclip     run      --rerun" in out and "unet      run      upstream stage tclip runs" in out
    assert "nothing was changed" in out
    assert snapshot() == before


def test_changed_unet_key_reruns_the_unet_but_not_the_stages_before_it(run_copy):
    before = (run_copy / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    cfg = load_config(None, TINY_RECIPE + ["train.max_train_steps=2"])
    summary = run_recipe(cfg, run_copy, stop_after="unet", progress=False)
    st = statuses(summary)
    assert [st[s] for s in ("data", "captions", "tclip", "vae")] == ["skipped (complete)"] * 4
    assert st["unet"] == "ran"
    assert (run_copy / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() != before
    # Downstream stages now depend on a new UNet: a full run would redo them (the judge reads no UNet).
    from thermgen.train.recipe import plan_recipe

    plan = {n: a for n, a, _ in plan_recipe(cfg, run_copy)}
    assert plan["unet"] == plan["judge"] == "skip" and plan["contrast"] == plan["evaluate"] == "run"


def test_missing_output_makes_its_stage_and_the_dependants_run_again(run_copy):
    (run_copy / "vae" / "config.json").unlink()
    summary = run_recipe(load_config(None, TINY_RECIPE), run_copy, stop_after="vae", progress=False)
    st = statuses(summary)
    assert st["tclip"] == "skipped (complete)" and st["vae"] == "ran"
    from thermgen.train.recipe import plan_recipe

    plan = {n: a for n, a, _ in plan_recipe(load_config(None, TINY_RECIPE), run_copy)}
    assert plan["unet"] == plan["ablation"] == "run" and plan["tclip"] == "skip"


def test_rerun_flag_forces_a_complete_stage(run_copy):
    summary = run_recipe(load_config(None, TINY_RECIPE), run_copy, rerun=("captions",), stop_after="captions",
                         progress=False)
    assert statuses(summary) == {"data": "skipped (complete)", "captions": "ran"}


def test_resume_continues_an_interrupted_unet_from_its_checkpoint(run_copy):
    (run_copy / ".stages" / "unet.json").unlink()  # as if killed after the last checkpoint
    run_recipe(load_config(None, TINY_RECIPE), run_copy, resume=True, stop_after="unet", progress=False)
    report = json.loads((run_copy / "unet" / "unet_report.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-4")


def test_without_resume_an_incomplete_unet_starts_over(run_copy):
    (run_copy / ".stages" / "unet.json").unlink()
    run_recipe(load_config(None, TINY_RECIPE), run_copy, stop_after="unet", progress=False)
    report = json.loads((run_copy / "unet" / "unet_report.json").read_text())
    assert report["resumed_from"] is None


def test_bad_override_exits_with_an_error_naming_the_key(capsys, tmp_path):
    assert main(["--out", str(tmp_path / "r"), "train.lerning_rate=0.1"]) == 2
    err = capsys.readouterr().err
    assert "train.lerning_rate" in err and "learning_rate" in err
    assert not (tmp_path / "r").exists()


def test_real_data_source_without_root_exits_naming_data_root(capsys, tmp_path):
    assert main(["--out", str(tmp_path / "r"), "--data-source", "hit-uav"]) == 2
    assert "data.root" in capsys.readouterr().err


def test_unknown_config_name_lists_the_shipped_ones(capsys):
    assert main(["--config", "no-such-recipe", "--print-config"]) == 2
    assert "cpu-default" in capsys.readouterr().err


def test_list_keys_documents_every_key(capsys):
    assert main(["--list-keys"]) == 0
    out = capsys.readouterr().out
    assert "train.max_train_steps = 600" in out and "unet.conditioning" in out
    from thermgen.train.config import SCHEMA

    listed = set(re.findall(r"^  ([a-z_]+\.[a-z_0-9.]+) = ", out, flags=re.M))
    every = {f"{section}.{key}" for section, fields in SCHEMA.items() for key in fields}
    assert listed == every  # every key of the schema, and nothing else, with its default
    for key in every:  # each followed by an indented help line
        assert re.search(rf"^  {re.escape(key)} = .*\n      \S", out, flags=re.M), key


def test_changed_tclip_settings_retrain_tclip_over_the_old_folder(run_copy):
    args = "tclip.train={base_stage: {steps: 3, batch_size: 8}, adapter_stage: {steps: 2, batch_size: 8}}"
    summary = run_recipe(load_config(None, TINY_RECIPE + [args]), run_copy, stop_after="tclip", progress=False)
    assert statuses(summary)["tclip"] == "ran"
    assert "stage base: 3 steps" in (run_copy / "tclip" / "logs" / "train.log").read_text()


def test_given_tclip_folder_conditions_the_unet_and_the_ablation_its_frozen_base_text_tower(run_copy, tmp_path):
    """Issue 13's generation ablation: tclip.dir names a T-CLIP whose adapters were trained over a frozen, pretrained
    base (an open_clip folder, as thermgen.bench.sim2real writes). No T-CLIP is trained; the UNet reads that
    folder's fused towers, the ablation its base text tower; re-fusing the folder in place reruns both."""
    import torch
    from diffusers import DiffusionPipeline

    from tclip import train as tclip_train
    from tclip.model import load
    from tclip.text_encoder import TCLIPTextEncoder
    from thermgen.train.recipe import plan_recipe

    base = load(run_copy / "tclip").export_base(tmp_path / "base")
    cfg = tmp_path / "adapters.json"
    cfg.write_text(json.dumps({"adapter_stage": {"steps": 2, "batch_size": 8}, "checkpoint_every": 50, "log_every": 2}))
    given = tmp_path / "given"
    assert tclip_train.main(["--manifest", str(run_copy / "manifest.jsonl"), "--split", "train", "--out", str(given),
                             "--base", f"local-dir:{base}", "--config", str(cfg), "--cpu", "--no-progress"]) == 0
    shutil.rmtree(run_copy / "tclip")  # nothing may read the run's own T-CLIP
    over = load_config(None, TINY_RECIPE + [f"tclip.dir={given}", "unet.fusion_alpha=0.6"])
    st = statuses(run_recipe(over, run_copy, stop_after="ablation", progress=False))
    assert [st[s] for s in ("tclip", "unet", "ablation")] == ["ran"] * 3 and not (run_copy / "tclip").exists()
    for pdir, mode in ((run_copy / "pipeline", "fused"), (run_copy / "ablation" / "pipeline", "base")):
        got = DiffusionPipeline.from_pretrained(pdir).text_encoder
        want = TCLIPTextEncoder.from_tclip(given, mode=mode, alpha=0.6)
        assert got.config.mode == mode and got.config.alpha == 0.6  # unet.fusion_alpha, not the folder's own
        assert got.state_dict().keys() == want.state_dict().keys()
        assert all(torch.equal(got.state_dict()[k], want.state_dict()[k]) for k in want.state_dict()), mode
    assert {a for _, a, _ in plan_recipe(over, run_copy, stop_after="ablation")} == {"skip"}
    other_alpha = load_config(None, TINY_RECIPE + [f"tclip.dir={given}", "unet.fusion_alpha=0.7"])
    plan = {n: a for n, a, _ in plan_recipe(other_alpha, run_copy, stop_after="ablation")}
    assert (plan["unet"], plan["ablation"]) == ("run", "skip")  # the base text tower has no fusion alpha
    conf = json.loads((given / "tclip_config.json").read_text())
    (given / "tclip_config.json").write_text(json.dumps({**conf, "fusion_alpha": 0.5}))
    plan = {n: a for n, a, _ in plan_recipe(over, run_copy, stop_after="ablation")}
    assert [plan[s] for s in ("captions", "vae", "tclip", "unet", "ablation")] == ["skip", "skip", "run", "run", "run"]


def test_each_training_stage_runs_in_its_own_process_so_their_mixed_precision_may_differ(run_copy):
    """One process would keep accelerate's first mixed-precision setting (T-CLIP's fp16 on CUDA) and refuse the
    next stage's; each training stage is a fresh process, so a bf16 VAE is followed by an fp32 UNet."""
    for log in (run_copy / "recipe.log", run_copy / "vae" / "logs" / "worker.log", run_copy / "unet" / "logs" / "worker.log"):
        log.unlink()  # the copied run's own: each must be written again by this run's processes
    cfg = load_config(None, TINY_RECIPE + ["vae.train={steps: 2, batch_size: 8, block_out_channels: [8, 16, 32], "
                                           "num_preview: 2, mixed_precision: bf16}", "train.max_train_steps=2"])
    summary = run_recipe(cfg, run_copy, stop_after="unet", progress=False)
    assert [statuses(summary)[s] for s in ("tclip", "vae", "unet")] == ["skipped (complete)", "ran", "ran"]
    log = (run_copy / "recipe.log").read_text()
    assert log.count("thermgen.train.worker --spec") == 2  # the VAE's process, then the UNet's
    assert (run_copy / "vae" / "logs" / "worker.log").is_file() and (run_copy / "unet" / "logs" / "worker.log").is_file()


def test_two_processes_train_every_stage_on_the_same_loss_curve_as_one(base_run, tmp_path):
    """--num-processes 2: T-CLIP, VAE and UNet each run as two gloo DDP processes on the global batches of one
    (the module's one-process run). Without CUDA the default device, 'auto', must mean CPU DDP too (accelerate reads
    torchrun's processes as multi-CPU only when told CPU; before, each T-CLIP process trained alone)."""
    import csv

    import numpy as np
    import torch

    def rows(path):
        with open(path) as fh:
            return list(csv.DictReader(fh))

    one, two = base_run[0], tmp_path / "two"
    auto = [] if torch.cuda.is_available() else ["run.device=auto"]
    summary = run_recipe(load_config(None, TINY_RECIPE + ["run.num_processes=2"] + auto), two, stop_after="unet",
                         progress=False)
    assert [statuses(summary)[s] for s in ("tclip", "vae", "unet")] == ["ran"] * 3
    assert "batch 4 x 2 processes" in (two / "tclip" / "logs" / "train.log").read_text()
    report = json.loads((two / "unet" / "train_report.json").read_text())
    assert report["num_processes"] == 2 and report["global_batch"] == 8
    for rel in ("tclip/logs/loss.csv", "vae/vae_log.csv", "unet/logs/train_log.csv"):
        a, b = rows(one / rel), rows(two / rel)
        assert len(a) == len(b) > 0, rel
        np.testing.assert_allclose([float(r["loss"]) for r in b], [float(r["loss"]) for r in a], rtol=1e-4, atol=1e-6,
                                   err_msg=rel)


def test_control_bench_judges_every_checkpoint_on_val(base_run, tmp_path):
    """python -m thermgen.bench.control: EMA weights per checkpoint, FID + judge + day/night swap, curve PNG."""
    from thermgen.bench.control import main as control

    run, _ = base_run
    out = tmp_path / "control"
    assert control(["--run", str(run), "--out", str(out), "--split", "val", "--steps", "2", "--raw", "--quiet"]) == 0
    rows = json.loads((out / "control.json").read_text())
    assert [(r["step"], r["weights"]) for r in rows] == [(2, "ema"), (4, "ema"), (4, "raw")]
    for r in rows:
        assert r["n"] == 4 and r["fid"] > 0 and "time_of_day" in r["attributes"]
        assert 0 <= r["swap_time_of_day"]["follows"] <= 1
    # EMA and raw weights of the same checkpoint are different models.
    assert rows[1]["fid"] != rows[2]["fid"]
    assert all(0 <= r["day_night_auc"] <= 1 for r in rows if r["day_night_auc"] == r["day_night_auc"])
    md = (out / "control.md").read_text()
    assert (out / "control.png").stat().st_size > 0 and "| 4 | raw |" in md
    ceiling = json.loads((out / "ceiling.json").read_text())  # the judge on the same records' real images
    assert ceiling["n"] == 4 and set(ceiling["attributes"]) == set(rows[0]["attributes"])
    assert "| real images of these records (ceiling) |" in md and "day/night AUC" in md

    # --scheduler: each sampler built from the pipeline's scheduler config, one row each; an unknown one is named.
    out2 = tmp_path / "samplers"
    assert control(["--run", str(run), "--out", str(out2), "--split", "val", "--checkpoints", "last", "--steps", "2",
                    "--scheduler", "dpm++", "ddim", "--quiet"]) == 0
    rows = json.loads((out2 / "control.json").read_text())
    assert [(r["step"], r["sampler"]) for r in rows] == [(4, "DPMSolverMultistepScheduler"), (4, "DDIMScheduler")]
    assert rows[0]["fid"] != rows[1]["fid"] and "| DDIMScheduler |" in (out2 / "control.md").read_text()
    assert (out2 / "control.png").stat().st_size > 0
    assert control(["--run", str(run), "--out", str(out2), "--scheduler", "nope", "--quiet"]) == 2

    # --guidance-interval: one row per interval ('none': every step guided), recorded in the images' settings
    out7 = tmp_path / "interval"
    assert control(["--run", str(run), "--out", str(out7), "--split", "val", "--checkpoints", "last", "--steps", "2",
                    "--guidance-interval", "1e11,1e12", "--quiet"]) == 0
    rows = json.loads((out7 / "control.json").read_text())
    every = json.loads((out / "control.json").read_text())[1]  # step 4, EMA, every step guided
    assert [r["guidance_interval"] for r in rows] == [[1e11, 1e12]] and rows[0]["fid"] != every["fid"]
    settings = json.loads((out7 / "work" / "images" / "generation.json").read_text())["settings"]
    assert settings["guidance_interval"] == [1e11, 1e12]
    assert "in sigma (1e+11, 1e+12]" in (out7 / "control.md").read_text()
    with pytest.raises(SystemExit):
        control(["--run", str(run), "--out", str(out7), "--guidance-interval", "2,1"])

    # --prompt-style: the same records prompted with held-out queries in a user's own words
    out3 = tmp_path / "queries"
    assert control(["--run", str(run), "--out", str(out3), "--split", "val", "--checkpoints", "last", "--steps", "2",
                    "--prompt-style", "keywords", "--quiet"]) == 0
    rows = json.loads((out3 / "control.json").read_text())
    assert rows[0]["prompt_style"] == "keywords" and rows[0]["n"] == 4 and 0 <= rows[0]["swap_time_of_day"]["follows"] <= 1
    assert "--prompt-style keywords" in (out3 / "control.md").read_text()

    # --pipeline: a pipeline folder's own weights (here the run's final one: its last checkpoint's EMA weights)
    out6 = tmp_path / "pipeline"
    assert control(["--run", str(run), "--out", str(out6), "--split", "val", "--pipeline", str(run / "pipeline"),
                    "--steps", "2", "--quiet"]) == 0
    final = json.loads((out6 / "control.json").read_text())
    assert [(r["step"], r["weights"]) for r in final] == [(-1, "final")]
    first = json.loads((out / "control.json").read_text())
    assert final[0]["fid"] == pytest.approx(first[1]["fid"], abs=1e-6)  # step 4, EMA: the same weights
    assert f"--pipeline {run / 'pipeline'}" in (out6 / "control.md").read_text()
    with pytest.raises(SystemExit):
        control(["--run", str(run), "--out", str(out6), "--pipeline", str(run / "pipeline"), "--raw"])

    # --contrast: each prompt's negative is its record's captions with the time of day edited; each swap side's
    # negative is the other side's prompt.
    out4 = tmp_path / "contrast"
    assert control(["--run", str(run), "--out", str(out4), "--split", "val", "--checkpoints", "last", "--steps", "2",
                    "--contrast", "time_of_day", "--also-swap", "person", "cars", "--quiet"]) == 0
    rows = json.loads((out4 / "control.json").read_text())
    assert rows[0]["contrast"] == "time_of_day" and "--contrast time_of_day" in (out4 / "control.md").read_text()
    # --also-swap: the people and car-count swaps beside the day/night one, each side contrasted with the other
    from thermgen.ircap.swap import swap_pairs

    val = [r for r in map(json.loads, (run / "manifest.jsonl").read_text().splitlines()) if r["split"] == "val"]
    for kind in ("person", "cars"):
        n = len(swap_pairs(val, kind, max_pairs=64))
        assert rows[0][f"swap_{kind}"]["pairs"] == n
        if n:
            assert 0 <= rows[0][f"swap_{kind}"]["follows"] <= 1 and "time_of_day" in rows[0][f"swap_{kind}"]["kept"]
            assert 0 <= rows[0][f"swap_{kind}"]["real_correct"] <= 1  # the judge on the records' real frames
            a, b = (json.loads((out4 / "work" / f"swap_{kind}_{k}" / "generation.json").read_text())["images"]
                    for k in "ab")
            assert [e["negative_prompt"] for e in a] == [e["prompt"] for e in b] and len(a) == n
            assert [e["negative_prompt"] for e in b] == [e["prompt"] for e in a]
            assert (out4 / f"swap_pairs_0_{kind}.png").is_file()
    assert rows[0]["swap_person"]["pairs"] > 0, "the tiny val split should hold people to swap"
    assert "Other one-fact swaps" in (out4 / "control.md").read_text()
    assert "| 3.0, negative: the other side |" in (out4 / "control.md").read_text()
    with pytest.raises(SystemExit):
        control(["--run", str(run), "--out", str(out4), "--also-swap", "person", "--prompt-style", "keywords"])
    from PIL import Image

    assert Image.open(out4 / "swap_pairs_0.png").size[0] > 100  # the swap pairs, side by side
    kept = rows[0]["swap_time_of_day"]["kept"]  # the facts the swap leaves alone, judged on both sides
    assert "time_of_day" not in kept and all(0 <= v["edited"] <= 1 and v["n"] > 0 for v in kept.values())
    main = json.loads((out4 / "work" / "images" / "generation.json").read_text())["images"]
    assert main and all(e["negative_prompt"] and e["negative_prompt"] != e["prompt"] for e in main)
    side_a, side_b = (json.loads((out4 / "work" / f"swap_{k}" / "generation.json").read_text())["images"]
                      for k in "ab")
    assert [e["negative_prompt"] for e in side_a] == [e["prompt"] for e in side_b]
    assert [e["negative_prompt"] for e in side_b] == [e["prompt"] for e in side_a]
    with pytest.raises(SystemExit):
        control(["--run", str(run), "--out", str(out4), "--contrast", "time_of_day", "--prompt-style", "keywords"])
    # --contrast-scale: the edited prompt as a third guidance branch, the empty prompt staying the negative.
    out5 = tmp_path / "contrast3"
    assert control(["--run", str(run), "--out", str(out5), "--split", "val", "--checkpoints", "last", "--steps", "2",
                    "--contrast", "time_of_day", "--contrast-scale", "2", "--seed", "0", "1", "--quiet"]) == 0
    rows = json.loads((out5 / "control.json").read_text())
    md = (out5 / "control.md").read_text()
    assert rows[0]["contrast_scale"] == 2.0 and "+ contrast 2.0" in md
    # --seed with several seeds: one row per seed, and mean +- std over them
    assert [r["seed"] for r in rows] == [0, 1] and rows[0]["fid"] != rows[1]["fid"]
    assert "Mean ± std over seeds" in md and "| 0 1 |" in md and "--seed 0 1" in md
    index = json.loads((out5 / "work" / "images" / "generation.json").read_text())  # the last seed's images
    assert index["settings"]["contrast_scale"] == 2.0
    assert [e["contrast_prompt"] for e in index["images"]] == [e["negative_prompt"] for e in main]
    assert not any("negative_prompt" in e for e in index["images"])


def test_control_bench_reports_a_swap_kind_without_pairs_as_empty(base_run, tmp_path, monkeypatch):
    """A swap kind no record of the split qualifies for (no six cars) is reported with 0 pairs and empty cells, and
    nothing is generated for it."""
    import thermgen.ircap.swap as swap_mod
    from thermgen.bench.control import main as control

    real = swap_mod.swap_pairs
    monkeypatch.setattr(swap_mod, "swap_pairs", lambda recs, kind, **kw: [] if kind == "cars" else real(recs, kind, **kw))
    run, out = base_run[0], tmp_path / "nocars"
    assert control(["--run", str(run), "--out", str(out), "--checkpoints", "last", "--steps", "2", "--prompts", "2",
                    "--also-swap", "cars", "--quiet"]) == 0
    cars = json.loads((out / "control.json").read_text())[0]["swap_cars"]
    assert cars["pairs"] == 0 and cars["follows"] != cars["follows"]  # NaN
    assert not (out / "work" / "swap_cars_a").exists() and not (out / "swap_pairs_0_cars.png").exists()
    row = [ln for ln in (out / "control.md").read_text().splitlines() if "cars 6+ -> 1-5" in ln]
    assert len(row) == 1 and row[0].count("|") == 11 and "nan" not in row[0]


def test_unet_trains_on_caption_variants(run_copy):
    """train.caption_variants: the UNet stage encodes each image's other phrasings and draws one per step."""
    cfg = load_config(None, TINY_RECIPE + ["train.caption_variants=true", "eval.enabled=false", "eval.judge=false"])
    run_recipe(cfg, run_copy, progress=False, stop_after="unet")
    report = json.loads((run_copy / "unet" / "train_report.json").read_text())
    assert report["caption_phrasings"] == 3  # the caption and its 2 variants
    with pytest.raises(Exception, match="captions.variants"):
        load_config(None, TINY_RECIPE + ["captions.variants=0", "train.caption_variants=true"])


def test_phrasing_draw_keeps_the_other_draws():
    import torch

    from thermgen.train.unet import micro_batch

    kw = dict(n_samples=20, global_batch=4, seed=3, latent_shape=(2, 4, 4), num_train_timesteps=10,
              caption_dropout=0.5, noise_offset=0.0, random_flip=True)
    a, b = micro_batch(5, **kw), micro_batch(5, **kw, n_phrasings=3)
    assert "phrasing" not in a and set(b["phrasing"].tolist()) <= {0, 1, 2}
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_phrased_takes_each_sample_from_the_phrasing_drawn_for_it():
    import torch

    from thermgen.train.unet import phrased

    main = torch.arange(4.0)[:, None].repeat(1, 3)  # row i: i
    variants = 10 * (torch.arange(4.0)[:, None] + 1) + torch.arange(2.0)[None, :]  # (4, 2): 10(i+1) + v
    variants = variants[..., None].repeat(1, 1, 3)
    out = phrased(main, variants, torch.tensor([3, 1, 1, 0]), torch.tensor([0, 1, 2, 2]))
    assert out[:, 0].tolist() == [3.0, 20.0, 21.0, 11.0]
    assert torch.equal(phrased(main, None, torch.tensor([2]), None), main[[2]])
    assert main[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]  # the cache itself is never written


def test_vae_center_crop_is_refused_naming_the_key():
    from thermgen.train.config import ConfigError, load_config
    from thermgen.train.recipe import vae_config

    assert vae_config(load_config(None))["center_crop"] is False
    with pytest.raises(ConfigError, match="vae.train.center_crop"):
        vae_config(load_config(None, ["vae.train={center_crop: true}"]))


def test_terse_variants_pair_with_the_fine_variants_in_turn():
    """captions.terse_variants adds global phrasings without fine twins; fused conditioning pairs them in turn."""
    from thermgen.train.recipe import _variants_for_mode

    recs = [{"id": "a", "caption_variants": {"global": ["g1", "g2", "t1", "t2", "t3"], "fine": ["f1", "f2"]}}]
    g, f = _variants_for_mode("fused", recs)
    assert g == [["g1", "g2", "t1", "t2", "t3"]] and f == [["f1", "f2", "f1", "f2", "f1"]]
    assert _variants_for_mode("global", recs) == (g, None)
    assert load_config(None, ["captions.terse_variants=4"])["captions"]["terse_variants"] == 4


def test_a_failed_stage_process_names_its_command_log_and_last_lines(tmp_path):
    from pathlib import Path

    from thermgen.train.recipe import Context, launch_stage

    ctx = Context(cfg={"run": {"num_processes": 1, "threads": None}}, run=tmp_path)
    log = tmp_path / "logs" / "demo.log"
    with pytest.raises(RuntimeError, match=r"(?s)stage demo failed \(exit status 1\).*demo\.log.*No module named no_such_mod"):
        launch_stage(ctx, ["no_such_mod"], "demo", log)
    assert "No module named no_such_mod" in Path(log).read_text()
