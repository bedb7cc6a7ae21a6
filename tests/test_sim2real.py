"""The sim2real study (thermgen.bench.sim2real), the open_clip export of a base, and held-out user queries."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from thermgen.ircap.queries import STYLES, build_queries, fact_ceiling, heldout_overlap, query_facts, render_query
from thermgen.ircap.render import parse_counts


# ---------------------------------------------------------------------------------------------- queries
def _rec(rid="x/test/1", tod="night", alt=60.0, angle=30.0, labels=("Car",) * 5 + ("Person",) * 2):
    return {"id": rid, "meta": {"time_of_day": tod, "altitude_m": alt, "view_angle_deg": angle},
            "objects": [{"label": lab, "box": [0, 0, 1, 1]} for lab in labels]}


def test_query_facts_come_from_metadata_and_boxes():
    f = query_facts(_rec(labels=("Car", "Car", "Person", "DontCare")))
    assert f == {"time": "night", "altitude": 60, "angle": 30, "counts": {"Car": 2, "Person": 1}, "absence_known": False}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("words", [False, True])
def test_every_query_states_every_fact_truly(style, words):
    for seed in range(20):
        rec = _rec(tod=random.Random(seed).choice(["day", "night"]), angle=random.Random(seed).choice([30.0, 90.0]))
        q = render_query(query_facts(rec), style, random.Random(seed), words=words)
        counts = parse_counts(q, ["Car", "Person"])
        assert counts == {"Car": [5], "Person": [2]}, q
        assert ("sixty" in q) if words else re.search(r"\b60 ?m", q), q
        tod = rec["meta"]["time_of_day"]
        assert re.search(r"night|dark" if tod == "night" else r"day", q), q
        assert not re.search(r"night|dark" if tod == "day" else r"\bday", q), q
        if rec["meta"]["view_angle_deg"] < 80:
            assert "30" in q, q
        else:
            assert re.search(r"top-down|nadir|overhead|straight|vertically|90", q), q


def test_absent_people_are_said_as_no_people_or_not_at_all():
    qs = [render_query(query_facts(_rec(labels=("Car",))), s, random.Random(i)) for s in STYLES for i in range(30)]
    assert any("no people" in q for q in qs) and any("people" not in q for q in qs)
    assert not any(re.search(r"\b(one|1|two|2) (person|people)", q) for q in qs)


def test_dont_care_boxes_forbid_absence_claims():
    rec = _rec(labels=("Car", "DontCare"))
    assert query_facts(rec)["absence_known"] is False
    qs = [render_query(query_facts(rec), s, random.Random(i)) for s in STYLES for i in range(40)]
    assert not any("no people" in q or "no cars" in q or "no people or vehicles" in q for q in qs)
    empty = _rec(labels=("DontCare",))
    assert not any(re.search(r"\bno (people|cars)", render_query(query_facts(empty), s, random.Random(i))) for s in STYLES for i in range(20))


def test_fact_ceiling_treats_80_and_90_degrees_as_one_top_down_view():
    recs = [_rec(rid="a", angle=80.0), _rec(rid="b", angle=90.0)]
    assert fact_ceiling(recs)["r1"] == pytest.approx(0.5)
    assert fact_ceiling([_rec(rid="a", angle=40.0), _rec(rid="b", angle=50.0)])["r1"] == pytest.approx(1.0)


def test_queries_are_deterministic_and_differ_by_seed():
    recs = [_rec(rid=f"x/test/{i}", alt=60.0 + 10 * (i % 3)) for i in range(10)]
    assert build_queries(recs, seed=0) == build_queries(recs, seed=0)
    assert build_queries(recs, seed=0) != build_queries(recs, seed=1)


def test_query_swaps_edit_only_the_time_of_day():
    from thermgen.bench.control import query_swaps

    recs = [_rec(rid=f"x/val/{i}", tod="day" if i % 2 else "night", alt=60.0 + 10 * i) for i in range(8)]
    for style in ("keywords", "request", "question"):
        pairs = query_swaps(recs, style, max_pairs=5, seed=0)
        assert len(pairs) == 5
        for qa, qb, va, vb in pairs:
            assert {va, vb} == {"day", "night"} and qa != qb
            night = re.compile(r"\b(night|nighttime|dark)\b")
            assert bool(night.search(qa)) == (va == "night") and bool(night.search(qb)) == (vb == "night")
            # nothing but the time words differs
            strip = lambda q: re.sub(r"\b(in the |in |at |during )?(daylight hours|daylight|daytime|day|nighttime|night|the dark|dark)\b", "", q)  # noqa: E731
            assert strip(qa) == strip(qb), (qa, qb)


def test_fact_ceiling_counts_images_with_equal_facts():
    recs = [_rec(rid="a"), _rec(rid="b"), _rec(rid="c", tod="day")]
    c = fact_ceiling(recs)
    assert c["r1"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert c["distinct"] == pytest.approx(1 / 3)


def test_heldout_overlap_finds_copied_captions():
    train = ["An infrared thermal image of a road at night, seen from 60 m, showing five cars."]
    h = heldout_overlap([train[0], "night, 60 m, five cars"], train)
    assert h["exact_matches"] == 1
    assert 0.0 < h["word_4gram_overlap"] < 1.0


def test_queries_use_no_ircap_caption_on_synthetic_scenes(tmp_path):
    from thermgen.data import load_samples
    from thermgen.data.synthetic import generate
    from thermgen.ircap.captioner import caption_samples
    from thermgen.ircap.manifest import read_manifest

    generate(tmp_path / "s", 12, size=48, seed=3, progress=False)
    samples, _ = load_samples("synthetic", tmp_path / "s")
    caption_samples(samples, tmp_path / "m.jsonl", variants=4, progress=False)
    recs = read_manifest(tmp_path / "m.jsonl")
    texts = [t for r in recs for k in ("global", "fine") for t in [r[f"{k}_caption"], *r["caption_variants"][k]]]
    for style, qs in build_queries(recs).items():
        h = heldout_overlap(qs, texts)
        assert h["exact_matches"] == 0
        assert h["word_4gram_overlap"] < 0.2, (style, h)


def test_queries_command_writes_one_manifest_per_style_for_a_split(tmp_path, capsys):
    from thermgen.data import load_samples
    from thermgen.data.synthetic import generate
    from thermgen.ircap.captioner import caption_samples
    from thermgen.ircap.manifest import read_manifest
    from thermgen.ircap.queries import main as queries_main

    generate(tmp_path / "s", 20, size=48, seed=4, progress=False)
    samples, _ = load_samples("synthetic", tmp_path / "s")
    caption_samples(samples, tmp_path / "m.jsonl", variants=2, terse_variants=2, progress=False)
    recs = read_manifest(tmp_path / "m.jsonl")
    val = [r for r in recs if r["split"] == "val"]
    assert val
    assert queries_main(["--manifest", str(tmp_path / "m.jsonl"), "--split", "val", "--out", str(tmp_path / "q")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["manifests"]) == {"keywords", "request", "question"} and summary["records"] == len(val)
    assert summary["heldout"]["exact_matches"] == 0 and 0 < summary["fact_ceiling"]["r1"] <= 1
    for style in ("keywords", "request", "question"):
        rows = read_manifest(tmp_path / "q" / f"val.{style}.jsonl")
        assert [r["id"] for r in rows] == [r["id"] for r in val]
        assert all(r["global_caption"] == r["fine_caption"] and "caption_variants" not in r for r in rows)
        assert all(Path(r["image"]).is_absolute() and Path(r["image"]).is_file() for r in rows)
    assert queries_main(["--manifest", str(tmp_path / "m.jsonl"), "--split", "nope", "--out", str(tmp_path / "q")]) == 2
    assert "no records with split 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- open_clip export
def test_exported_base_loads_in_plain_open_clip_and_as_a_tclip_base(tmp_path):
    import open_clip

    from tclip.model import TCLIP, load

    torch.manual_seed(0)
    m = TCLIP.from_base("tclip-tiny-rn").eval()
    folder = m.export_base(tmp_path / "oc", extra={"note": "test"})
    assert sorted(p.name for p in folder.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    oc = open_clip.create_model(f"local-dir:{folder}").eval()
    x = torch.rand(2, 1, *m.image_size)
    tok = m.tokenize(["a night scene with two cars", "people"])
    with torch.no_grad():
        assert torch.allclose(m.encode_image(x, variant="base"), torch.nn.functional.normalize(oc.encode_image(m.preprocess(x)), dim=-1), atol=1e-5)
        assert torch.allclose(m.encode_text(tok, variant="base"), torch.nn.functional.normalize(oc.encode_text(tok), dim=-1), atol=1e-5)
    # as a pretrained base: the T-CLIP folder stores the weights, so it loads after the open_clip folder is gone
    t = TCLIP.from_base(f"local-dir:{folder}")
    assert t.base_info["arch_config"]["embed_dim"] == 64
    t.save(tmp_path / "t")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    with torch.no_grad():
        assert torch.allclose(load(tmp_path / "t").encode_image(x, variant="base"), m.encode_image(x, variant="base"), atol=1e-5)


# ---------------------------------------------------------------------------------------------- the bench, tiny
def _tiny_configs(tmp_path):
    base = {"base_stage": {"steps": 8, "batch_size": 8, "lr": 2e-3, "warmup": 2}, "adapter_stage": {"steps": 0},
            "checkpoint_every": 50, "log_every": 2, "augment": {"hflip": True, "shift": 0.0}}
    adapters = {"adapter_stage": {"steps": 4, "batch_size": 8, "lr": 2e-3, "warmup": 1}, "checkpoint_every": 50, "log_every": 2}
    ref = {"base_stage": {"steps": 4, "batch_size": 8, "warmup": 1}, "adapter_stage": {"steps": 2, "batch_size": 8, "warmup": 1},
           "checkpoint_every": 50, "log_every": 2}
    paths = []
    for name, cfg in (("base", base), ("adapters", adapters), ("ref", ref)):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(cfg))
        paths.append(str(p))
    return paths


def _fake_camera(tmp_path, n):
    """The "real camera": another synthetic set, captioned per split into tmp_path/hit as HIT-UAV would be."""
    from thermgen.data import load_samples
    from thermgen.data.synthetic import generate
    from thermgen.ircap.captioner import caption_samples

    generate(tmp_path / "real", n, size=64, seed=7, progress=False)
    for split in ("train", "val", "test"):
        samples, _ = load_samples("synthetic", tmp_path / "real", split=split)
        caption_samples(samples, tmp_path / "hit" / f"{split}.jsonl", variants=2, progress=False)


@pytest.mark.slow
def test_sim2real_tiny_end_to_end(tmp_path, capsys):
    from thermgen.bench import sim2real

    _fake_camera(tmp_path, 48)
    base_cfg, ad_cfg, ref_cfg = _tiny_configs(tmp_path)
    out = tmp_path / "out"
    argv = ["--manifests", str(tmp_path / "hit"), "--out", str(out), "--seeds", "0", "1", "--fractions", "0.5", "1.0",
            "--scenes", "40", "--size", "64", "--variants", "2", "--arch", "tclip-tiny-rn", "--base-config", base_cfg,
            "--adapter-config", ad_cfg, "--reference-config", ref_cfg, "--workers", "1", "--no-progress"]
    assert sim2real.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["fractions"]) == {"0.5", "1.0"}
    assert len(res["fractions"]["1.0"]["variants"]["dual"]["runs"]) == 2
    assert res["zero_shot"]["variants"]["base"]["runs"] and res["reference"]["variants"]["dual"]["runs"]
    assert set(res["queries"]) == {"zero_shot", "f0.5", "f1.0", "reference"}
    assert set(res["queries"]["f1.0"]) == set(STYLES)
    assert res["heldout"]["keywords"]["hit-uav train"]["exact_matches"] == 0
    assert 0.0 < res["vocabulary"]["real_vocabulary_covered"] <= 1.0
    assert (out / "label_efficiency.png").stat().st_size > 0 and (out / "examples.png").stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "zero-shot" in md and "T-CLIP dual" in md and "held-out" in md
    # the base is an ordinary open_clip folder, trained on the synthetic corpus only
    cfg = json.loads((out / "synthetic-base" / "open_clip_config.json").read_text())
    assert cfg["thermgen"]["corpus_manifest"].endswith("manifest.agc.jsonl")
    # the adapters trained on the frozen synthetic base: its weights are unchanged in every adapted folder
    from safetensors.torch import load_file

    base_w = load_file(str(out / "synthetic-base" / "open_clip_model.safetensors"))
    adapted = load_file(str(out / "adapt" / "f1.0" / "seed0" / "base.safetensors"))
    assert base_w.keys() == adapted.keys() and all(torch.equal(base_w[k], adapted[k]) for k in base_w)
    # and `tclip.train --base local-dir:...` adapts it like any pretrained base (no base stage)
    from tclip import train as tclip_train

    cli_out = tmp_path / "cli"
    assert tclip_train.main(["--manifest", str(tmp_path / "hit" / "train.jsonl"), "--out", str(cli_out), "--base",
                             f"local-dir:{out / 'synthetic-base'}", "--config", ad_cfg, "--adapter-steps", "2", "--no-progress"]) == 0
    state = json.loads((cli_out / "train_state.json").read_text())
    assert state["finished"] and state["completed"] == ["base", "global", "fine"]
    assert "base," not in (cli_out / "logs" / "loss.csv").read_text()  # no row of a base stage
    # the 0.5 subsets differ between seeds and hold half the images
    a = (out / "subsets" / "train-f0.5-seed0.jsonl").read_text().splitlines()
    b = (out / "subsets" / "train-f0.5-seed1.jsonl").read_text().splitlines()
    n_train = len((tmp_path / "hit" / "train.jsonl").read_text().splitlines())
    assert len(a) == len(b) == round(0.5 * n_train) and a != b
    # the synthetic corpus is complete (stamp written last), its AGC frames are 8-bit and span the range
    import numpy as np
    from PIL import Image

    assert json.loads((out / "synthetic" / "corpus.json").read_text()) == {"n": 40, "size": 64, "seed": 0, "variants": 2}
    frame = np.asarray(Image.open(next((out / "synthetic" / "agc" / "train").glob("*.png"))))
    assert frame.dtype == np.uint8 and frame.min() == 0 and frame.max() == 255
    # a rerun reuses every step and every report
    timing = json.loads((out / "timing.json").read_text())
    stamps = {p: p.stat().st_mtime_ns for p in (out / "reports").glob("*.json")}
    assert sim2real.main(argv) == 0
    assert json.loads((out / "timing.json").read_text()) == timing
    assert {p: p.stat().st_mtime_ns for p in (out / "reports").glob("*.json")} == stamps
    # another corpus setting into the same folder is refused, and so is an edited config file
    assert sim2real.main([*argv[:-1], "--scenes", "41", "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err
    (tmp_path / "adapters.json").write_text(json.dumps({"adapter_stage": {"steps": 5, "batch_size": 8}}))
    assert sim2real.main(argv) == 2
    assert "other settings" in capsys.readouterr().err
    # a fraction smaller than one adapter batch is refused before any training
    assert sim2real.main([*argv[:-1], "--out", str(tmp_path / "o2"), "--fractions", "0.1", "--no-progress"]) == 2
    assert "fewer than one adapter batch" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "adapt").exists()


# ---------------------------------------------------------------------------------------------- terse variants
def test_terse_variants_state_true_counts_and_only_measured_facts(tmp_path):
    from collections import Counter

    from thermgen.data import load_samples
    from thermgen.data.synthetic import generate
    from thermgen.ircap.captioner import caption_one
    from thermgen.ircap.render import GLOBAL_PREFIX, noun, spell_number

    assert [spell_number(n) for n in (7, 40, 65, 100, 120, 999)] == [
        "seven", "forty", "sixty-five", "one hundred", "one hundred and twenty", "nine hundred and ninety-nine"]
    generate(tmp_path / "s", 16, size=48, seed=5, progress=False)
    samples, _ = load_samples("synthetic", tmp_path / "s")
    seen_digits = seen_words = seen_spelled = seen_absent = 0
    for s in samples:
        rec, _ = caption_one(s, tmp_path / "m.jsonl", variants=2, terse_variants=3)
        plain, again = rec["caption_variants"]["global"], caption_one(s, tmp_path / "m.jsonl", variants=2, terse_variants=3)[0]
        assert again["caption_variants"] == rec["caption_variants"]  # deterministic
        assert len(plain) == 5 and len(rec["caption_variants"]["fine"]) == 2
        truth = Counter(b.label for b in s.boxes)
        for t in plain[2:]:
            assert not t.startswith(GLOBAL_PREFIX)
            counts = parse_counts(t, list(truth))
            assert counts == {lab: [n] for lab, n in truth.items()}, (t, truth)
            seen_digits += bool(re.search(r"\b\d+ (car|person|people|bicycle)", t))
            seen_words += bool(re.search(r"\b(one|two|three|four|five|six|seven|eight|nine|ten) (car|person|people|bicycle)", t))
            tod = s.meta["time_of_day"]
            assert not re.search(r"\bnight|after dark" if tod == "day" else r"\bday", t), t
            alt = re.search(r"(\d+) ?(?:m|metres|meters)\b", t)
            assert alt is None or int(alt.group(1)) == round(s.meta["altitude_m"]), t
            alt_words = re.search(r"([a-z -]+?) (?:metres|meters)\b", t.lower())
            if alt_words:
                seen_spelled += 1
                assert alt_words.group(1).strip().endswith(spell_number(round(s.meta["altitude_m"]))), t
            ang = re.search(r"(\d+) ?(?:°|degrees|deg)", t)
            assert ang is None or int(ang.group(1)) == round(s.meta["view_angle_deg"]), t
            for lab in ("person", "car"):  # an absence is said only when true
                if re.search(rf"\bno {noun(lab, 2)}\b", t):
                    seen_absent += 1
                    assert not any(b.label.lower() == lab for b in s.boxes), t
    assert seen_digits and seen_words and seen_spelled and seen_absent


def test_choose_alpha_takes_the_best_val_alpha_and_breaks_ties_towards_the_papers_then_the_larger():
    from tclip.eval import choose_alpha

    rep = lambda sweep: {"alpha_sweep": {"mean_R@1": sweep}}  # noqa: E731
    assert choose_alpha(rep({"0.5": 0.2, "0.8": 0.1, "1.0": 0.15})) == 0.5
    assert choose_alpha(rep({"0.5": 0.2, "0.8": 0.2, "1.0": 0.2})) == 0.8
    assert choose_alpha(rep({"0.5": 0.2, "0.7": 0.2, "0.8": 0.1})) == 0.7


def test_config_digest_ignores_speed_and_memory_keys(tmp_path):
    from thermgen.bench.sim2real import _config_digest

    base = {"base": "tclip-tiny", "base_stage": {"steps": 3}}
    paths = []
    for i, extra in enumerate([{}, {"image_workers": 0, "image_cache_mb": 0}, {"base_stage": {"steps": 4}}]):
        paths.append(tmp_path / f"c{i}.json")
        paths[-1].write_text(json.dumps({**base, **extra}))
    a, b, c = (_config_digest(str(p)) for p in paths)
    assert a == b and a != c


def test_base_terse_variants_reach_the_synthetic_training_captions_only(tmp_path, capsys):
    from thermgen.bench import sim2real
    from thermgen.ircap.manifest import read_manifest
    from thermgen.ircap.render import GLOBAL_PREFIX

    m = sim2real.make_synthetic_corpus(tmp_path, 12, 32, 0, 2, 1, False, terse_variants=3)
    recs = list(read_manifest(m))
    train = [r for r in recs if r["split"] == "train"]
    val = [r for r in recs if r["split"] == "val"]
    assert train and val
    for r in train:  # 2 IR-Cap phrasings, then 3 terse variants
        g = r["caption_variants"]["global"]
        assert len(g) == 5 and all(not t.startswith(GLOBAL_PREFIX) for t in g[2:]) and len(set(g[2:])) == 3
    assert all(len(r["caption_variants"]["global"]) == 2 for r in val)  # val keeps IR-Cap's captions
    # the corpus stamp names the option; a corpus without it is another corpus, and one made before it stays complete
    assert sim2real.corpus_done(tmp_path, 12, 32, 0, 2, 3) and not sim2real.corpus_done(tmp_path, 12, 32, 0, 2)
    (tmp_path / "synthetic" / sim2real.CORPUS_STAMP).write_text(json.dumps({"n": 12, "size": 32, "seed": 0, "variants": 2}))
    assert sim2real.corpus_done(tmp_path, 12, 32, 0, 2)
    # the settings stamp: unchanged at 0, the option recorded otherwise; refused with a base made before
    args = sim2real.build_parser().parse_args(["--manifests", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "base_terse_variants" not in sim2real.settings_stamp(args)
    args.base_terse_variants = 4
    assert sim2real.settings_stamp(args)["base_terse_variants"] == 4
    argv = ["--manifests", str(tmp_path), "--out", str(tmp_path / "o"), "--base", str(tmp_path), "--base-terse-variants", "4"]
    assert sim2real.main(argv) == 2
    assert "--base-terse-variants applies when this command makes the synthetic corpus" in capsys.readouterr().err
    assert sim2real.main([*argv[:4], "--terse-variants", "-1"]) == 2  # named before any other check
    assert "must be >= 0, got -1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- flight envelope
def test_corpus_flight_envelope_and_density_reach_the_scenes_and_the_stamps(tmp_path, capsys):
    from thermgen.bench import sim2real
    from thermgen.ircap.manifest import read_manifest

    argv = ["--manifests", str(tmp_path), "--out", str(tmp_path / "o"), "--altitude", "60", "130", "--view-angle", "30", "90",
            "--object-scale", "1.7"]
    args = sim2real.build_parser().parse_args(argv)
    opts = sim2real.scene_options_from_args(args)
    assert opts == {"altitude_range_m": (60.0, 130.0), "view_angle_range_deg": (30.0, 90.0), "object_scale": 1.7}
    m = sim2real.make_synthetic_corpus(tmp_path, 10, 32, 0, 2, 1, False, scene_options=opts)
    recs = list(read_manifest(m))
    assert recs and all(60 <= r["meta"]["altitude_m"] <= 130 and 30 <= r["meta"]["view_angle_deg"] <= 90 for r in recs)
    assert sim2real.corpus_done(tmp_path, 10, 32, 0, 2, scene_options=opts)
    assert not sim2real.corpus_done(tmp_path, 10, 32, 0, 2)  # a default corpus is another corpus
    assert sim2real.settings_stamp(args)["scene_options"] == {"altitude_range_m": [60.0, 130.0], "object_scale": 1.7,
                                                              "view_angle_range_deg": [30.0, 90.0]}
    default = sim2real.build_parser().parse_args(argv[:4])
    assert sim2real.scene_options_from_args(default) == {} and "scene_options" not in sim2real.settings_stamp(default)
    # refused with a base made before, and an envelope no view fits is refused before anything is written
    assert sim2real.main([*argv, "--base", str(tmp_path)]) == 2
    assert "apply when this command makes the synthetic corpus" in capsys.readouterr().err
    assert sim2real.main(["--manifests", str(tmp_path), "--out", str(tmp_path / "o3"), "--altitude", "300", "400"]) == 2
    assert "no view of the synthetic scenes fits" in capsys.readouterr().err
    assert not (tmp_path / "o3" / "bench.json").exists()


# ---------------------------------------------------------------------------------------------- AdaBN
@pytest.mark.slow
def test_adapt_bn_gives_the_adapters_and_the_zero_shot_row_a_base_with_target_statistics(tmp_path, capsys):
    from safetensors.torch import load_file

    from tclip.model import TCLIP
    from thermgen.bench import sim2real

    _fake_camera(tmp_path, 40)
    torch.manual_seed(0)  # a "synthetic base" made before (its corpus manifest: any manifest with a val split)
    base = TCLIP.from_base("tclip-tiny-rn").export_base(tmp_path / "base", extra={"corpus_manifest": str(tmp_path / "hit" / "val.jsonl")})
    _, ad_cfg, _ = _tiny_configs(tmp_path)
    out = tmp_path / "out"
    argv = ["--manifests", str(tmp_path / "hit"), "--base", str(base), "--out", str(out), "--seeds", "0", "--fractions", "1.0",
            "--adapter-config", ad_cfg, "--no-reference", "--adapt-bn", "--no-progress"]
    assert sim2real.main(argv) == 0
    bn = out / "synthetic-base-adabn"
    stats = json.loads((bn / "open_clip_config.json").read_text())["thermgen"]["batchnorm_stats"]
    n_train = len((tmp_path / "hit" / "train.jsonl").read_text().splitlines())
    assert stats["images"] + stats["images_left_out"] == n_train and stats["source"].endswith("train.jsonl (split train)")
    new, old = load_file(str(bn / "open_clip_model.safetensors")), load_file(str(base / "open_clip_model.safetensors"))
    assert any(not torch.equal(new[k], old[k]) for k in new if k.endswith("running_mean"))
    # the adapters and the zero-shot row sit on the re-estimated base, which they leave unchanged
    for run in (out / "adapt" / "f1.0" / "seed0", out / "zero-shot"):
        w = load_file(str(run / "base.safetensors"))
        assert all(torch.equal(w[k], new[k]) for k in new)
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["adapt_bn"] is True
    # the plain base's zero-shot row beside the AdaBN one, and the synthetic val figure of the plain base
    plain = load_file(str(out / "zero-shot-without-adabn" / "base.safetensors"))
    assert all(torch.equal(plain[k], old[k]) for k in old)
    assert res["zero_shot_without_adabn"]["variants"]["base"]["runs"]
    assert json.loads((out / "reports" / "synthetic_val.json").read_text())["models"] == [str(out / "zero-shot-without-adabn")]
    md = (out / "results.md").read_text()
    assert "zero-shot, without AdaBN" in md and "+ AdaBN (HIT-UAV train frames, no labels), zero-shot" in md
    # a rerun reuses the re-estimated base; the same folder without the option is another setting
    mtime = (bn / "open_clip_model.safetensors").stat().st_mtime_ns
    assert sim2real.main(argv) == 0
    assert (bn / "open_clip_model.safetensors").stat().st_mtime_ns == mtime
    assert sim2real.main([a for a in argv if a != "--adapt-bn"]) == 2
    assert "other settings" in capsys.readouterr().err
    # a tower without batch norms (a ViT) is refused before anything is written
    vit = TCLIP.from_base("tclip-tiny").export_base(tmp_path / "vit", extra={"corpus_manifest": str(tmp_path / "hit" / "val.jsonl")})
    for extra in (["--base", str(vit)], ["--arch", "tclip-tiny", "--hit-root", str(tmp_path / "nowhere")]):
        o = tmp_path / f"o{len(extra)}"
        args = [a for a in argv if a not in ("--base", str(base))]
        args[args.index("--out") + 1] = str(o)
        if "--hit-root" in extra:
            args = [a for a in args if a not in ("--manifests", str(tmp_path / "hit"))]
        assert sim2real.main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert "--adapt-bn re-estimates batch-norm statistics" in err and ("tclip-tiny" in err or str(vit) in err)
        assert not (o / "bench.json").exists()  # refused before the settings stamp (only the log is there)
