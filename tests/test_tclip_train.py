"""tclip.train and tclip.eval end to end on a tiny synthetic manifest (seconds each on 2 CPU cores)."""

import logging
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import tclip
from tclip import eval as tclip_eval
from tclip import train as tclip_train
from tclip.metrics import recall_at_k

FAST = ["--config", "tiny", "--base-steps", "4", "--adapter-steps", "4", "--batch-size", "8", "--no-progress"]


def write_manifest(root: Path, n_train: int = 16, n_test: int = 8) -> Path:
    """Tiny thermal images (hot square or not, warm or cold background) with matching captions."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_train + n_test):
        warm, hot = i % 2, (i // 2) % 2
        arr = (rng.random((40, 48)) * 40 + (150 if warm else 30)).astype(np.uint8)
        if hot:
            arr[8 + i % 5 : 18 + i % 5, 10:20] = 250
        Image.fromarray(arr).save(root / "img" / f"{i}.png")
        split = "train" if i < n_train else "test"
        lines.append(
            json.dumps(
                {
                    "schema_version": 1,
                    "id": f"synthetic/{split}/{i}",
                    "image": f"img/{i}.png",
                    "split": split,
                    "global_caption": f"An infrared thermal image of a {'warm' if warm else 'cold'} scene, frame {i}.",
                    "fine_caption": f"Thermal infrared image: {'a hot square' if hot else 'no hot object'} at row {8 + i % 5}.",
                }
            )
        )
    path = root / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tclip"
    assert tclip_train.main(["--manifest", str(manifest), "--out", str(out), "--seed", "0", *FAST]) == 0
    return out


def _adapter_weights(folder: Path, name: str) -> dict:
    return load_file(folder / "adapters" / name / "adapter_model.safetensors")


def test_training_writes_a_loadable_tclip_folder_with_logs(trained):
    for rel in ("tclip_config.json", "base.safetensors", "adapters/global/adapter_model.safetensors",
                "adapters/fine/adapter_config.json", "logs/loss.csv", "logs/loss.png", "logs/train.log"):
        assert (trained / rel).is_file(), rel
    rows = list(csv.DictReader((trained / "logs" / "loss.csv").open()))
    assert {r["stage"] for r in rows} == {"base", "global", "fine"}
    assert json.loads((trained / "train_state.json").read_text())["completed"] == ["base", "global", "fine"]
    model = tclip.load(trained)
    assert model.adapters == ["global", "fine"]
    # The adapters were trained: they move the embeddings away from the base.
    x = torch.rand(2, 1, 40, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model.encode_image(x, "global") - model.encode_image(x, "base")).abs().max() > 1e-4


def test_training_is_deterministic_for_a_seed(manifest, trained, tmp_path):
    again = tmp_path / "again"
    assert tclip_train.main(["--manifest", str(manifest), "--out", str(again), "--seed", "0", *FAST]) == 0
    assert torch.equal(load_file(again / "base.safetensors")["visual.conv1.weight"], load_file(trained / "base.safetensors")["visual.conv1.weight"])
    for name in ("global", "fine"):
        a, b = _adapter_weights(again, name), _adapter_weights(trained, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def with_variants(manifest: Path) -> Path:
    """A copy of `manifest` whose records carry one other phrasing of the global caption."""
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    for rec in lines:
        rec["caption_variants"] = {"global": [rec["global_caption"].replace("scene", "view")], "fine": []}
    varied = manifest.parent / "varied.jsonl"
    varied.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return varied


def test_resume_continues_from_the_last_checkpoint_exactly(manifest, tmp_path, caplog):
    out = tmp_path / "resumed"
    args = ["--manifest", str(with_variants(manifest)), "--out", str(out), "--seed", "0", *FAST]
    cfg = tmp_path / "ckpt.json"
    # step 3 of 2-batch epochs: the resume starts mid-epoch; the augmentation draws must replay too
    cfg.write_text(json.dumps({"base": "tclip-tiny", "checkpoint_every": 3, "augment": {"hflip": True, "shift": 0.1}}))
    args[args.index("tiny")] = str(cfg)
    assert tclip_train.main(args) == 0
    assert (out / "checkpoints" / "fine" / "step-3").is_dir()
    # Simulate a run killed during the fine stage after its step-3 checkpoint.
    state = json.loads((out / "train_state.json").read_text())
    state["completed"] = ["base", "global"]
    (out / "train_state.json").write_text(json.dumps(state))
    finished = _adapter_weights(out, "fine")
    log_rows = lambda: [{k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
                        for r in csv.DictReader((out / "logs" / "loss.csv").open())]
    rows_finished = log_rows()
    assert tclip_train.main(args) != 0  # refuses to overwrite a partial run without --resume
    with caplog.at_level(logging.INFO, logger="tclip.train"):
        assert tclip_train.main([*args, "--resume"]) == 0
    # It really continued from the checkpoint (determinism alone would also reproduce the weights from step 0).
    assert any("stage fine: resumed from" in r.getMessage() and "step-3" in r.getMessage() for r in caplog.records)
    assert not any("stage global: resumed" in r.getMessage() for r in caplog.records)  # completed stages are kept
    resumed = _adapter_weights(out, "fine")
    assert all(torch.allclose(resumed[k], finished[k], atol=1e-6) for k in finished)
    # the log holds each step once: the fine stage's rows past step 3 were dropped and logged again
    rows = log_rows()
    assert [(r["stage"], r["step"]) for r in rows] == [(r["stage"], r["step"]) for r in rows_finished]
    assert [float(r["loss"]) for r in rows] == pytest.approx([float(r["loss"]) for r in rows_finished], abs=1e-5)


def test_resume_refuses_a_changed_config(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--manifest", str(manifest), "--out", str(out), "--seed", "0", *FAST]
    assert tclip_train.main(args) == 0
    args[args.index("--seed") + 1] = "1"
    assert tclip_train.main([*args, "--resume"]) == 2
    assert "--resume with a different config (changed keys: seed)" in capsys.readouterr().err


def test_pretrained_checkpoint_base_trains_only_the_adapters(manifest, trained, tmp_path):
    ckpt = trained / "base.safetensors"
    out = tmp_path / "from_ckpt"
    assert tclip_train.main(["--manifest", str(manifest), "--out", str(out), "--base", f"tclip-tiny:{ckpt}", "--adapter", "global", *FAST]) == 0
    rows = list(csv.DictReader((out / "logs" / "loss.csv").open()))
    assert {r["stage"] for r in rows} == {"global"}
    a, b = load_file(out / "base.safetensors"), load_file(ckpt)
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert tclip.load(out).adapters == ["global"]


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"adapter_stage": {"stepz": 3}}))
    with pytest.raises(ValueError, match=r"adapter_stage.*'stepz'"):
        tclip_train.load_train_config(bad)


def test_every_shipped_training_config_loads_and_its_lora_builds():
    from tclip.lora import make_lora_config

    names = sorted(p.stem for p in Path(tclip_train.TRAIN_CONFIG_DIR).glob("*.json"))
    assert {"hituav-cpu", "synthetic-base", "sim2real-adapters", "sim2real-adapters-convs"} <= set(names)
    for name in names:
        cfg = tclip_train.load_train_config(name)  # unknown keys and bad values are errors naming the key
        lora = cfg["lora"]
        peft_cfg = make_lora_config(r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"], towers=lora["towers"],
                                    mlp=lora["mlp"], convs=lora["convs"])
        assert peft_cfg.r == lora["r"] and peft_cfg.lora_alpha == lora["alpha"], name


def test_help_says_the_base_is_trained_first_without_pretrained_weights(capsys):
    with pytest.raises(SystemExit):
        tclip_train.main(["--help"])
    assert "FIRST TRAINS THE WHOLE BASE" in capsys.readouterr().out


def test_eval_writes_report_table_curves_and_embeddings(manifest, trained, tmp_path):
    out = tmp_path / "rep" / "report.json"
    emb = tmp_path / "rep" / "emb.npz"
    code = tclip_eval.main(["--model", str(trained), str(trained), "--manifest", str(manifest), "--split", "test",
                            "--out", str(out), "--save-embeddings", str(emb), "--alpha-sweep", "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["variants"]) == {"base", "global", "fine", "tclip-global", "tclip-fine", "dual"}
    assert report["n_images"] == 8 and report["ks"] == [1, 5, 10, 25, 50, 100]
    dual = report["variants"]["dual"]
    assert len(dual["runs"]) == 2 and dual["std"]["i2t"]["1"] == 0.0  # the same folder twice
    assert set(report["alpha_sweep"]["mean_R@1"]) == {str(a) for a in tclip_eval.SWEEP_ALPHAS}
    assert out.with_suffix(".md").read_text().count("| dual |") == 1
    assert out.with_suffix(".png").stat().st_size > 0
    # Anyone can recompute the metrics from the saved embeddings.
    z = np.load(emb)
    again = recall_at_k(z["run0__dual__image"], z["run0__dual__text"], list(z["image_ids"]), list(z["text_ids"]))
    assert again["i2t"][1] == pytest.approx(dual["mean"]["i2t"]["1"]) and again["t2i"][5] == pytest.approx(dual["mean"]["t2i"]["5"])


def test_eval_skips_variants_that_need_a_missing_adapter(manifest, tmp_path):
    m = tclip.TCLIP.from_base("tclip-tiny", adapters=["global"])
    m.save(tmp_path / "g")
    report = tclip_eval.evaluate([tmp_path / "g"], manifest, split="test", progress=False)
    assert set(report["variants"]) == {"base", "global"}
    assert "dual" in report["skipped"]


def test_eval_of_an_unknown_split_is_an_error(manifest, trained, tmp_path, capsys):
    assert tclip_eval.main(["--model", str(trained), "--manifest", str(manifest), "--split", "nope", "--out", str(tmp_path / "r.json")]) == 2
    assert "no records with split 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- augmentation
def test_swap_words_exchanges_whole_words_both_ways():
    text = "Left: two cars in the upper left and one person on the right; bright, leftover."
    assert tclip_train.swap_words(text, [["left", "right"]]) == "Right: two cars in the upper right and one person on the left; bright, leftover."
    assert tclip_train.swap_words(text, []) == text


class _Records:
    """Stand-ins for ManifestRecord with variants, and a tokenizer whose rows can be read back."""

    def __init__(self):
        from tclip.data import ManifestRecord

        self.records = [
            ManifestRecord("a", Path("a.png"), "train", "car upper left", "fine a left", 1, ("car at top left", "a car, left"), ()),
            ManifestRecord("b", Path("b.png"), "train", "person right", "fine b right", 2, (), ("fine b, right side",)),
        ]
        self.vocab: list[str] = []

    def tokenizer(self, texts):
        rows = []
        for t in texts:
            if t not in self.vocab:
                self.vocab.append(t)
            rows.append([self.vocab.index(t), 0, 0])
        return torch.tensor(rows)

    def text(self, row) -> str:
        return self.vocab[int(row[0])]


def test_augment_picks_variants_and_mirrors_image_and_caption_together():
    r = _Records()
    images = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    aug = {"caption_variants": True, "hflip": True, "swap_words": [["left", "right"]], "shift": 0.0}
    data = tclip_train._PairData.build(images, r.records, r.tokenizer, aug)
    assert data.tokens.shape[:4] == (2, 2, 2, 3) and data.counts.tolist() == [[3, 1], [1, 2]]
    pixels, tokens, counts = images.clone(), data.tokens, data.counts
    # kind draw < 0.5 -> global; variant draw 0.99 -> the last of each record's own variants; flip draw < 0.5 -> mirrored
    draw = torch.tensor([[0.1, 0.99, 0.2, 0.0, 0.0], [0.9, 0.99, 0.8, 0.0, 0.0]])
    out, tok = tclip_train._augment_batch(pixels, tokens, counts, draw, "random", aug)
    assert r.text(tok[0]) == "a car, right" and torch.equal(out[0], images[0].flip(-1))
    assert r.text(tok[1]) == "fine b, right side" and torch.equal(out[1], images[1])
    # a fixed kind ignores the kind draw; caption_variants off always takes the manifest's caption
    _, tok = tclip_train._augment_batch(pixels, tokens, counts, draw, "fine", {**aug, "caption_variants": False, "hflip": False})
    assert [r.text(t) for t in tok] == ["fine a left", "fine b right"]


def test_augment_shift_translates_within_the_frame():
    img = torch.zeros(1, 1, 20, 20)
    img[0, 0, 10, 10] = 1.0
    aug = {"caption_variants": False, "hflip": False, "swap_words": [], "shift": 0.1}
    tokens, counts = torch.zeros(1, 2, 2, 1, 3, dtype=torch.long), torch.ones(1, 2, dtype=torch.long)
    seen = set()
    for dy, dx in [(0.0, 0.0), (0.99, 0.99), (0.5, 0.0)]:
        out, _ = tclip_train._augment_batch(img, tokens, counts, torch.tensor([[0, 0, 0, dy, dx]]), "global", aug)
        assert out.shape == img.shape and out.sum() == 1.0
        seen.add(tuple((out[0, 0] == 1).nonzero()[0].tolist()))
    assert seen == {(12, 12), (8, 8), (10, 12)}  # up to 2 px (10 % of 20) each way


@pytest.mark.parametrize(
    "augment,match",
    [
        ({"hflip": "yes"}, r"augment\.hflip must be bool, like its default"),
        ({"shift": 0.3}, r"augment.shift must be a number in \[0, 0.1\]"),
        ({"swap_words": [["left"]]}, "augment.swap_words must be a list of"),
        ({"crop": True}, "unknown key 'crop'"),
    ],
)
def test_bad_augment_settings_are_named(augment, match):
    with pytest.raises(ValueError, match=match):
        tclip_train.load_train_config("tiny", {"augment": augment})


def test_training_with_variants_flips_and_shifts_runs_and_logs_the_settings(manifest, tmp_path, caplog):
    varied = with_variants(manifest)
    cfg = tmp_path / "aug.json"
    cfg.write_text(json.dumps({"base": "tclip-tiny", "augment": {"hflip": True, "shift": 0.1}}))
    args = ["--manifest", str(varied), "--out", str(tmp_path / "aug"), *FAST]
    args[args.index("tiny")] = str(cfg)
    with caplog.at_level(logging.INFO, logger="tclip.train"):
        assert tclip_train.main(args) == 0
    assert any("captions per image: global 2.0, fine 1.0" in r.getMessage() for r in caplog.records)
    assert tclip.load(tmp_path / "aug").adapters == ["global", "fine"]


def test_resnet_tower_trains_with_finite_losses_and_its_folder_embeds(manifest, tmp_path):
    """The CPU default tower is a ResNet: its LoRA rides the attention pool through every stage."""
    cfg = tmp_path / "rn.json"
    cfg.write_text(json.dumps({"base": "tclip-tiny-rn"}))
    assert tclip_train.main(["--manifest", str(manifest), "--out", str(tmp_path / "rn"), "--config", str(cfg),
                             "--base-steps", "2", "--adapter-steps", "1", "--batch-size", "8", "--no-progress"]) == 0
    rows = list(csv.DictReader((tmp_path / "rn" / "logs" / "loss.csv").open()))
    assert {r["stage"] for r in rows} == {"base", "global", "fine"}
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    model = tclip.load(tmp_path / "rn")
    with torch.no_grad():
        emb = (model.encode_image(torch.rand(2, 1, 64, 64)), model.encode_text(["a warm scene"] * 2, ["a hot square"] * 2))
    assert all(torch.isfinite(e).all() for e in emb)


def _tiny_config(path: Path, **keys) -> Path:
    cfg = json.loads((Path(tclip_train.TRAIN_CONFIG_DIR) / "tiny.json").read_text())
    cfg.update({"augment": {"hflip": True, "shift": 0.1}, **keys})
    path.write_text(json.dumps(cfg))
    return path


def test_streamed_images_train_the_same_weights_as_preloaded_ones(manifest, tmp_path, monkeypatch):
    import tclip.data

    def run(name: str, **keys) -> Path:
        out = tmp_path / name
        args = ["--manifest", str(with_variants(manifest)), "--out", str(out), "--seed", "0", *FAST]
        args[args.index("tiny")] = str(_tiny_config(tmp_path / f"{name}.json", **keys))
        assert tclip_train.main(args) == 0
        return out

    preloaded = run("preloaded", image_cache_mb=None)
    # image_cache_mb 0: every batch is read from disk by a DataLoader worker; the split is never decoded whole.
    monkeypatch.setattr(tclip.data, "load_images", lambda *a, **k: pytest.fail("a streamed split was loaded whole"))
    streamed = run("streamed", image_cache_mb=0, image_workers=1)
    a, b = load_file(preloaded / "base.safetensors"), load_file(streamed / "base.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("global", "fine"):
        a, b = _adapter_weights(preloaded, name), _adapter_weights(streamed, name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # What a run may change on --resume: speed and memory, not the result.
    monkeypatch.undo()
    args = ["--manifest", str(with_variants(manifest)), "--out", str(streamed), "--seed", "0", *FAST, "--resume"]
    args[args.index("tiny")] = str(_tiny_config(tmp_path / "resume.json", image_cache_mb=64, image_workers=0))
    assert tclip_train.main(args) == 0


def test_streamed_eval_gives_the_same_report(manifest, trained, tmp_path, monkeypatch):
    import tclip.data

    kept = tclip_eval.evaluate([trained], manifest, split="test", progress=False)
    monkeypatch.setattr(tclip.data, "load_images", lambda *a, **k: pytest.fail("a streamed split was loaded whole"))
    streamed = tclip_eval.evaluate([trained], manifest, split="test", progress=False, image_cache_mb=0, workers=1)
    assert streamed["variants"] == kept["variants"]


@pytest.mark.parametrize("cfg,match", [({"image_cache_mb": -1}, "image_cache_mb"), ({"image_workers": 1.5}, "image_workers")])
def test_bad_image_settings_are_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        tclip_train.load_train_config("tiny", cfg)
