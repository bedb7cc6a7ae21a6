"""tclip.bench_hituav's protocol on a tiny synthetic manifest (the real run takes minutes on HIT-UAV)."""

import json

from tclip import bench_hituav

from test_tclip_train import write_manifest


def test_bench_trains_every_seed_chooses_alpha_on_val_and_writes_the_table(tmp_path, capsys):
    src = write_manifest(tmp_path / "data", n_train=16, n_test=8)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    lines = [json.loads(x) for x in src.read_text().splitlines()]
    for rec in lines:
        rec["image"] = str(src.parent / rec["image"])
    train = [r for r in lines if r["split"] == "train"]
    held = [r for r in lines if r["split"] == "test"]
    (manifests / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (manifests / "val.jsonl").write_text("".join(json.dumps({**r, "split": "val"}) + "\n" for r in held[:4]))
    (manifests / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held[4:]))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({
        "base": "tclip-tiny",
        "base_stage": {"steps": 3, "batch_size": 8, "warmup": 1},
        "adapter_stage": {"steps": 2, "batch_size": 8, "warmup": 1},
    }))
    out = tmp_path / "bench"
    assert bench_hituav.main(["--manifests", str(manifests), "--out", str(out), "--seeds", "0", "1", "--config", str(cfg), "--no-progress"]) == 0
    assert "has no caption_variants" in capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    val = json.loads((out / "reports" / "val.json").read_text())
    sweep = val["alpha_sweep"]["mean_R@1"]
    assert sweep[str(result["alpha"])] == max(sweep.values())  # alpha is val's best
    test = json.loads((out / "reports" / "test.json").read_text())
    assert test["split"] == "test" and test["n_images"] == 4 and test["alpha"] == result["alpha"]
    # each seed trained its own base: the base row varies across seeds
    assert {p.name for p in out.iterdir() if p.name.startswith("seed")} == {"seed0", "seed1"}
    assert (out / "seed0" / "base.safetensors").read_bytes() != (out / "seed1" / "base.safetensors").read_bytes()
    table = (out / "results.md").read_text()
    for row in ("untrained base", "base (trained from scratch", "global adapter", "fine adapter", "**T-CLIP dual**"):
        assert row in table
    assert ("does not beat the best single adapter" in table) != result["dual_beats_best_single"]
    assert result["queries"] == {}
    # a rerun skips the finished training; --queries adds held-out query manifests with the same models and alpha
    qdir = tmp_path / "queries"
    qdir.mkdir()
    (qdir / "test.short.jsonl").write_text("".join(json.dumps({**r, "global_caption": r["global_caption"][:30],
                                                               "fine_caption": r["global_caption"][:30]}) + "\n" for r in held[4:]))
    assert bench_hituav.main(["--manifests", str(manifests), "--out", str(out), "--seeds", "0", "1", "--config", str(cfg),
                              "--no-progress", "--queries", str(qdir)]) == 0
    assert "already trained, skipped" in capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    q = json.loads((out / "reports" / "queries_short.json").read_text())
    assert q["alpha"] == result["alpha"] and len(q["variants"]["dual"]["runs"]) == 2
    assert result["queries"]["short"]["R@1"]["i2t"] == q["variants"]["dual"]["mean"]["i2t"]["1"]
    assert "| short |" in (out / "results.md").read_text()
    assert bench_hituav.main(["--manifests", str(manifests), "--out", str(out), "--seeds", "0", "1", "--config", str(cfg),
                              "--no-progress", "--queries", str(tmp_path)]) == 2
    assert "no test.<style>.jsonl query manifests" in capsys.readouterr().err
    # ... but not with other settings, whose finished runs would be silently reused
    other = tmp_path / "other.json"
    other.write_text(cfg.read_text())
    assert bench_hituav.main(["--manifests", str(manifests), "--out", str(out), "--config", str(other), "--no-progress"]) == 2
    assert "holds a bench run with other settings" in capsys.readouterr().err
