"""The attribute judge (thermgen.metrics.attributes, thermgen.judge) and the one-fact swap builder (thermgen.ircap.swap)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thermgen.metrics.attributes import (
    AttributeJudge,
    attribute_table,
    judge_images,
    record_attributes,
    swap_report,
)


class PoolFeatures(nn.Module):
    """Tiny deterministic features for tests: 4x4 pooled levels and their square roots (32-d)."""

    name = "tiny-pool-32"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.adaptive_avg_pool2d(x[:, :1] / 255.0, 4).flatten(1)
        return torch.cat([p, torch.sqrt(p + 0.1)], dim=1)


def _rec(i: int, split: str, tod: str, alt: float, angle: float, labels: list[str], image: str = "x.png") -> dict:
    return {"schema_version": 1, "id": f"t/{split}/{i:04d}", "image": image, "split": split, "source": "t",
            "width": 64, "height": 64, "global_caption": "g", "fine_caption": "f",
            "objects": [{"label": lab, "box": [1, 1, 4, 4], "facts": {}} for lab in labels],
            "meta": {"time_of_day": tod, "altitude_m": alt, "view_angle_deg": angle},
            "measurements": {"image": {}, "objects": [{} for _ in labels]},
            "captioner": {"name": "test", "version": "0", "seed": 0}}


def test_record_attributes_come_from_metadata_and_boxes_only():
    rec = _rec(0, "test", "night", 60, 90, ["Car"] * 7 + ["Person", "DontCare"])
    rec["global_caption"] = "A day scene with no cars."  # captions are never read
    assert record_attributes(rec) == {"time_of_day": "night", "altitude": "low", "view": "nadir", "person": "present",
                                      "cars": "6+"}
    assert record_attributes(_rec(1, "test", "day", 100, 60, ["Car", "Bicycle"])) == {
        "time_of_day": "day", "altitude": "mid", "view": "steep", "person": "absent", "cars": "1-5"}
    r = _rec(2, "test", "day", 130, 30, [])
    del r["meta"]["altitude_m"]
    assert record_attributes(r) == {"time_of_day": "day", "view": "oblique", "person": "absent", "cars": "0"}
    r["source"] = "folder"  # an unannotated image folder: no boxes does not mean no people
    assert record_attributes(r) == {"time_of_day": "day", "view": "oblique"}


def _separable(n: int, seed: int):
    """Features where night lowers dims 0-3 and 'present' raises dims 4-7, plus noise in 24 other dims."""
    rng = np.random.default_rng(seed)
    tod = rng.choice(["day", "night"], n)
    person = rng.choice(["absent", "present"], n)
    x = rng.normal(0, 1, (n, 32))
    x[:, :4] += np.where(tod == "night", -2.5, 2.5)[:, None]
    x[:, 4:8] += np.where(person == "present", 2.5, -2.5)[:, None]
    return x, {"time_of_day": list(tod), "person": list(person)}


def test_judge_learns_separable_attributes_and_falls_to_chance_on_shuffled_labels(tmp_path):
    x, y = _separable(400, 0)
    xv, yv = _separable(200, 1)
    xt, yt = _separable(400, 2)
    judge = AttributeJudge.fit(x, y, val_feats=xv, val_labels=yv, info={"resolution": 64})
    res = judge_images(judge, xt, yt)
    assert res["time_of_day"]["accuracy"] > 0.97 and res["person"]["accuracy"] > 0.97
    assert set(res["time_of_day"]["confusion"]) == {"day", "night"}
    assert sum(sum(r.values()) for r in res["person"]["confusion"].values()) == 400
    # every head chooses its own L2 on val (the whole grid is tried for each attribute)
    for h in judge.heads.values():
        assert set(h["val_accuracy_by_l2"]) == {str(v) for v in AttributeJudge.L2_GRID}
    fixed = AttributeJudge.fit(x, y, val_feats=xv, val_labels=yv, l2={"time_of_day": 0.1, "person": 1e-4})
    assert fixed.heads["time_of_day"]["l2"] == 0.1 and fixed.heads["person"]["l2"] == 1e-4

    rng = np.random.default_rng(3)
    shuffled = {a: list(rng.permutation(v)) for a, v in y.items()}
    chance = judge_images(AttributeJudge.fit(x, shuffled, val_feats=xv, val_labels=yv), xt, yt)
    for a in ("time_of_day", "person"):
        assert 0.35 < chance[a]["accuracy"] < 0.65, chance[a]

    # Round trip through safetensors + JSON gives the same verdicts.
    judge.save(tmp_path / "j")
    again = AttributeJudge.load(tmp_path / "j")
    assert again.predict(xt) == judge.predict(xt)
    assert not list((tmp_path / "j").glob("*.pt")) and not list((tmp_path / "j").glob("*.pkl"))


def test_grading_counts_a_verdict_outside_the_classes_as_a_miss():
    from thermgen.metrics.attributes import grade_predictions

    r = grade_predictions({"time_of_day": ["day", "(no head)", "night"]}, {"time_of_day": ["day", "night", "night"]},
                          {"time_of_day": ["day", "night"]}, {"time_of_day": "night"})["time_of_day"]
    assert r["n"] == 3 and r["accuracy"] == pytest.approx(2 / 3) and r["confusion"]["night"]["(no head)"] == 1
    assert r["balanced_accuracy"] == pytest.approx(0.75)


def _judge_and_clear_images(n: int):
    """A judge fitted on :func:`_separable` and ``n`` clear day and ``n`` clear night feature rows."""
    x, y = _separable(300, 0)
    day, night = np.zeros((n, 32)), np.zeros((n, 32))
    day[:, :4], night[:, :4] = 3, -3
    return AttributeJudge.fit(x, y), day, night


def test_stated_auc_reads_how_far_apart_the_prompts_put_the_images_whatever_the_threshold():
    from thermgen.metrics.attributes import separation_auc, stated_auc

    assert separation_auc([3, 4], [1, 2]) == 1.0 and separation_auc([1, 2], [3, 4]) == 0.0
    assert separation_auc([1, 2], [2, 1]) == 0.5 and np.isnan(separation_auc([], [1]))
    judge, day, night = _judge_and_clear_images(6)
    stated = ["night"] * 6 + ["day"] * 6 + [None]
    feats = np.concatenate([night, day, day[:1]])
    assert stated_auc(judge, feats, stated, "time_of_day", "night") == 1.0
    wrong = np.concatenate([day, night, night[:1]])  # every image on the wrong side
    assert stated_auc(judge, wrong, stated, "time_of_day", "night") == 0.0
    # Both groups judged "day" (accuracy at the majority rate), yet the night prompts' images lean further to night.
    shifted = np.concatenate([day * 0.5, day, day[:1]])
    r = judge_images(judge, shifted, {"time_of_day": stated})["time_of_day"]
    assert r["accuracy"] == 0.5 and stated_auc(judge, shifted, stated, "time_of_day", "night") == 1.0
    with pytest.raises(ValueError, match="dusk"):
        stated_auc(judge, feats, stated, "time_of_day", "dusk")


def test_swap_kept_reads_the_other_facts_on_each_side():
    """Side A keeps the record's time of day on pairs 0-1 and states the edit on 2-3. Side B's images lose the
    person attribute; side A's keep it: the factual side is right on pairs 0-1, the edited side on 2-3."""
    from thermgen.metrics.attributes import AttributeJudge, swap_kept

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    labels = {"time_of_day": ["night" if v > 0 else "day" for v in x[:, 0]],
              "person": ["present" if v > 0 else "absent" for v in x[:, 1]]}
    judge = AttributeJudge.fit(x, labels, l2=1e-3)
    a = np.array([[1.0, 3.0]] * 4)   # person present on every side-A image
    b = np.array([[-1.0, -3.0]] * 4)  # absent on every side-B image
    kept = swap_kept(judge, "time_of_day", a, b, {"person": ["present"] * 4, "time_of_day": ["day"] * 4},
                     [True, True, False, False])
    assert set(kept) == {"person"}
    assert kept["person"] == {"n": 4, "factual": 0.5, "edited": 0.5, "agree": 0.0}
    kept = swap_kept(judge, "time_of_day", a, b, {"person": ["present"] * 4}, [True] * 4)
    assert kept["person"]["factual"] == 1.0 and kept["person"]["edited"] == 0.0
    with pytest.raises(ValueError, match="one flag per pair"):
        swap_kept(judge, "time_of_day", a, b, {"person": ["present"] * 4}, [True])


def test_swap_report_counts_pairs_that_follow_the_swap():
    judge, day, night = _judge_and_clear_images(4)
    # Pairs 0-1 follow (day image for the day prompt, night for night); pair 2 ignores the prompt; pair 3 is reversed.
    a = np.stack([day[0], day[1], day[2], night[3]])
    b = np.stack([night[0], night[1], day[2], day[3]])
    r = swap_report(judge, "time_of_day", a, b, ["day"] * 4, ["night"] * 4)
    assert r["pairs"] == 4 and r["follows"] == 0.5 and r["verdict_changed"] == 0.75
    assert r["moved"] == 0.5 and "factual_correct" not in r

    # Which side fails: pairs 0 and 2 come from day frames, 1 and 3 from night frames. Pair 2 (day image for both
    # prompts) fails on its edited (night) side; pair 3 (reversed) fails on both sides.
    r = swap_report(judge, "time_of_day", a, b, ["day"] * 4, ["night"] * 4, real_values=["day", "night", "day", "night"])
    assert r["factual_correct"] == 0.75 and r["edited_correct"] == 0.5 and r["pairs_with_real_value"] == 4
    r = swap_report(judge, "time_of_day", a, b, ["day"] * 4, ["night"] * 4, real_values=["day", None, None, "night"])
    assert r["pairs_with_real_value"] == 2 and r["factual_correct"] == 0.5 and r["edited_correct"] == 0.5


def _day_night_manifest(folder, sizes: dict[str, int], *, levels: tuple[float, float], noise: float, size: int,
                        seed: int, varied: bool = False) -> list[dict]:
    """Real-like 16-bit PNGs (odd indices night: darker, at ``levels`` = (day, night) mean) and their manifest
    ``folder/manifest.jsonl``; ``varied``: altitudes, angles and car counts vary with the index."""
    from thermgen.io import write_png16
    from thermgen.ircap.manifest import write_manifest

    rng = np.random.default_rng(seed)
    recs = []
    for split, n in sizes.items():
        for i in range(n):
            tod = "night" if i % 2 else "day"
            img = np.clip(rng.normal(levels[1] if tod == "night" else levels[0], noise, (size, size)), 0, 1)
            name = f"{split}_{i:03d}.png"
            write_png16(folder / name, (img * 65535).astype(np.uint16))
            recs.append(_rec(i, split, tod, 60 + 10 * (i % 8) if varied else 60, 30 + 10 * (i % 7) if varied else 30,
                             ["Car"] * (i % 3) if varied else [], name))
    write_manifest(folder / "manifest.jsonl", recs)
    return recs


def test_judge_command_end_to_end_on_a_tiny_image_set(tmp_path):
    """train_judge on real-like PNGs (night frames darker) with a tiny extractor; eval_folder reads generation.json."""
    from thermgen.io import write_png16
    from thermgen.judge import eval_folder, train_judge

    recs = _day_night_manifest(tmp_path, {"train": 40, "val": 20, "test": 20}, levels=(0.7, 0.25), noise=0.05, size=64,
                               seed=0, varied=True)
    rep = train_judge(tmp_path / "manifest.jsonl", tmp_path / "judge", resolution=32, feature=PoolFeatures(),
                      progress=False)
    assert rep["ceiling"]["time_of_day"]["accuracy"] == 1.0
    assert rep["ceiling"]["time_of_day"]["majority_rate"] == 0.5
    assert (tmp_path / "judge" / "report.md").read_text().count("| time_of_day |") == 1

    # "Generated" images: the day prompts got night-dark frames, the night prompts night frames.
    gen = tmp_path / "gen"
    gen.mkdir()
    test = [r for r in recs if r["split"] == "test"]
    entries = []
    for k, r in enumerate(test):
        write_png16(gen / f"{k:05d}.png", (np.full((32, 32), 0.25) * 65535).astype(np.uint16))
        entries.append({"file": f"{k:05d}.png", "prompt": r["global_caption"], "record_id": r["id"]})
    (gen / "generation.json").write_text(json.dumps({"images": entries}))
    graded = eval_folder(tmp_path / "judge", tmp_path / "manifest.jsonl", gen, feature=PoolFeatures(), progress=False)
    tod = graded["attributes"]["time_of_day"]
    assert tod["accuracy"] == 0.5 and tod["confusion"]["day"]["night"] == 10 and tod["confusion"]["night"]["night"] == 10

    # Seed diversity: a second "seed" folder, same prompts, each image a little brighter or darker.
    from thermgen.judge import diversity_folders

    gen2 = tmp_path / "gen2"
    gen2.mkdir()
    for k in range(len(test)):
        write_png16(gen2 / f"{k:05d}.png", (np.full((32, 32), 0.25 + 0.01 * (k % 5)) * 65535).astype(np.uint16))
    (gen2 / "generation.json").write_text(json.dumps({"images": entries}))
    div = diversity_folders(tmp_path / "judge", [gen, gen2], feature=PoolFeatures(), progress=False)
    assert (div["seeds"], div["prompts"]) == (2, len(test)) and div["within"] > 0
    (gen2 / "generation.json").write_text(json.dumps({"images": [dict(entries[0], prompt="another prompt")] + entries[1:]}))
    with pytest.raises(ValueError, match="prompts differ"):
        diversity_folders(tmp_path / "judge", [gen, gen2], feature=PoolFeatures(), progress=False)

    entries[0]["record_id"] = "t/test/missing"
    (gen / "generation.json").write_text(json.dumps({"images": entries}))
    with pytest.raises(ValueError, match=r"images\[0\]: field 'record_id'"):
        eval_folder(tmp_path / "judge", tmp_path / "manifest.jsonl", gen, feature=PoolFeatures(), progress=False)


def test_autoencoder_ceiling_streams_a_split_and_a_lossless_autoencoder_keeps_the_originals_scores(tmp_path):
    """autoencoder_ceiling over more images than one batch of 32: the PatchAutoencoder reconstructs exactly, so its
    reconstructions score as the originals do."""
    from pipelines.patch_autoencoder import PatchAutoencoder
    from thermgen.judge import train_judge
    from thermgen.metrics.judging import autoencoder_ceiling

    _day_night_manifest(tmp_path, {"train": 40, "val": 70, "test": 20}, levels=(0.6, 0.3), noise=0.1, size=32, seed=1)
    train_judge(tmp_path / "manifest.jsonl", tmp_path / "judge", resolution=32, feature=PoolFeatures(), progress=False)
    PatchAutoencoder(patch_size=4).save_pretrained(tmp_path / "ae")
    rep = autoencoder_ceiling(tmp_path / "judge", tmp_path / "manifest.jsonl", tmp_path / "ae", split="val",
                              reference="test", feature=PoolFeatures(), progress=False)
    assert rep["n"] == 70 and rep["vae_class"] == "PatchAutoencoder"
    o, r = rep["originals"], rep["reconstructions"]
    assert o["attributes"]["time_of_day"]["accuracy"] == 1.0
    assert r["attributes"] == o["attributes"]
    assert r["fid_vs_reference"] == pytest.approx(o["fid_vs_reference"], rel=1e-5)


# ---- the swap builder --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hit_records(hit_uav_root, tmp_path_factory):
    """IR-Cap records of 60 HIT-UAV test frames (real measurements, real boxes)."""
    from thermgen.caption import caption_samples
    from thermgen.data import load_samples

    from thermgen.ircap.manifest import read_manifest

    samples, _ = load_samples("hit-uav", hit_uav_root, split="test")
    out = tmp_path_factory.mktemp("cap") / "m.jsonl"
    caption_samples(samples[::10], out, progress=False)
    return read_manifest(out)


def test_swap_edits_exactly_one_fact(hit_records):
    from thermgen.ircap.facts import infer_facts
    from thermgen.ircap.swap import other_differences, swap_pairs, swap_record

    rec = next(r for r in hit_records if any(o["label"] == "Person" for o in r["objects"]))
    # Re-rendering a record's own facts reproduces its captions (the swap changes only what it edits).
    from thermgen.ircap.swap import _facts, _render

    caps = _render(rec, *_facts(rec))
    assert (caps.global_caption, caps.fine_caption) == (rec["global_caption"], rec["fine_caption"])

    tod = swap_pairs(hit_records, "time_of_day")
    assert len(tod) >= 40
    by_id = {r["id"]: r for r in hit_records}
    for p in tod:
        assert (p.value_a, p.value_b) == ("day", "night")
        assert p.real_value == by_id[p.record_id]["meta"]["time_of_day"]  # the side as photographed
        sa = {f["fact"]: f["value"] for f in p.stated_a if f["caption"] == "global"}
        sb = {f["fact"]: f["value"] for f in p.stated_b if f["caption"] == "global"}
        assert sa.pop("time_of_day") == "day" and sb.pop("time_of_day") == "night"
        assert sa == sb  # every other global fact (counts, altitude, view, weather, contrast) is the same
        assert not other_differences(p)

    people = swap_record(rec, "person")
    counts_a = {f["label"]: f["value"] for f in people.stated_a if f["fact"] == "count"}
    counts_b = {f["label"]: f["value"] for f in people.stated_b if f["fact"] == "count"}
    assert counts_a.pop("Person") > 0 and "Person" not in counts_b and people.real_value == "present"
    assert counts_a == counts_b
    scene = {(f["fact"], str(f["value"])) for f in people.stated_a if "label" not in f}
    assert scene == {(f["fact"], str(f["value"])) for f in people.stated_b if "label" not in f}
    assert swap_record(next(r for r in hit_records if not any(o["label"] == "Person" for o in r["objects"])),
                       "person") is None

    many = [r for r in hit_records if sum(o["label"] == "Car" for o in r["objects"]) >= 6]
    if many:
        p = swap_record(many[0], "cars")
        ca = {f["label"]: f["value"] for f in p.stated_a if f["fact"] == "count"}
        cb = {f["label"]: f["value"] for f in p.stated_b if f["fact"] == "count"}
        assert ca.pop("Car") >= 6 and cb.pop("Car") == 2 and ca == cb and p.real_value == "6+"
    # The contrastive negative of a record is the swap side that states the edit, never the record itself.
    from thermgen.ircap.swap import contrast_captions

    for p in tod[:5]:
        r = by_id[p.record_id]
        edited = (p.global_b, p.fine_b) if p.real_value == "day" else (p.global_a, p.fine_a)
        assert contrast_captions(r, "time_of_day") == edited
        assert edited != (r["global_caption"], r["fine_caption"])
    # This record's people swap also drops a fine clause on one side (to fit 77 tokens): as a contrast prompt it
    # would push guidance along that clause too, so it is refused unless asked for.
    assert other_differences(people)
    assert contrast_captions(rec, "person") is None
    assert contrast_captions(rec, "person", clean_only=False) == (people.global_b, people.fine_b)
    # The scene facts given to the renderer are the record's own: infer_facts is what the swap starts from.
    scene_facts, _ = infer_facts(rec["measurements"], [o["label"] for o in rec["objects"]], rec["meta"])
    assert any(f.name == "time_of_day" for f in scene_facts)


def test_attribute_table_lines_up_with_records():
    recs = [_rec(0, "t", "day", 60, 30, []), _rec(1, "t", "night", 120, 85, ["Person"])]
    t = attribute_table(recs)
    assert t["time_of_day"] == ["day", "night"] and t["altitude"] == ["low", "high"] and t["person"] == ["absent", "present"]


def test_text_probe_reads_a_fact_the_captions_state_and_not_one_they_omit(tmp_path):
    """thermgen.judge text: linear probes on the text encoder's embeddings of the captions (train -> val -> test)."""
    from pipelines.testing import TINY_TEXT_CFG
    from tclip.text_encoder import TCLIPTextEncoder
    from thermgen.ircap.manifest import write_manifest
    from thermgen.judge import main, text_probe

    torch.manual_seed(0)
    TCLIPTextEncoder(embed_dim=32, text_cfg=dict(TINY_TEXT_CFG), mode="fused").save_pretrained(tmp_path / "te")

    def manifest(name, states_time):
        recs = []
        for split, n in (("train", 48), ("val", 24), ("test", 24)):
            for i in range(n):
                tod = "night" if i % 2 else "day"
                r = _rec(i, split, tod, 60.0, 30.0, ["Car"] * (i % 3))
                when = ("at night " if tod == "night" else "in daytime ") if states_time else ""
                r["global_caption"] = f"An infrared thermal image {when}with {i % 3} cars."
                r["fine_caption"] = "Thermal infrared image of a road."
                recs.append(r)
        write_manifest(tmp_path / name, recs)
        return tmp_path / name

    rep = text_probe(tmp_path / "te", manifest("stated.jsonl", True))
    assert rep["mode"] == "fused" and set(rep["embeddings"]) == {"mean_tokens", "pooled"}
    assert rep["embeddings"]["mean_tokens"]["time_of_day"]["accuracy"] == 1.0
    # the same images with captions that never state the time of day: nothing to read beyond chance (0.5)
    omitted = text_probe(tmp_path / "te", manifest("omitted.jsonl", False))
    assert omitted["embeddings"]["mean_tokens"]["time_of_day"]["accuracy"] <= 0.6
    assert main(["text", "--text-encoder", str(tmp_path / "te"), "--manifest", str(tmp_path / "stated.jsonl"),
                 "--out", str(tmp_path / "probe.json"), "--quiet"]) == 0
    assert "| mean_tokens | 1.000 |" in (tmp_path / "probe.md").read_text()
    assert main(["text", "--text-encoder", str(tmp_path), "--manifest", str(tmp_path / "stated.jsonl"),
                 "--out", str(tmp_path / "x.json"), "--quiet"]) == 2


def test_seed_diversity_is_zero_when_the_seed_does_not_matter_and_near_one_when_only_the_seed_does():
    from thermgen.metrics.attributes import seed_diversity

    rng = np.random.default_rng(0)
    prompts = rng.normal(size=(200, 16)) * 5
    same = seed_diversity([prompts, prompts.copy(), prompts.copy()])
    assert same["within"] == 0 and same["ratio"] == 0 and same["across"] > 0
    noise = seed_diversity([rng.normal(size=(200, 16)) for _ in range(3)])  # images unrelated to the prompt
    assert 0.9 < noise["ratio"] < 1.1
    some = seed_diversity([prompts + rng.normal(size=prompts.shape) for _ in range(2)])
    assert 0.05 < some["ratio"] < 0.5 and some["seeds"] == 2 and some["prompts"] == 200
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_diversity([prompts])
    with pytest.raises(ValueError, match="same >= 2 prompts"):
        seed_diversity([prompts, prompts[:10]])


# ---- does the judge read the attribute or the site? -------------------------------------------------------
def test_flight_groups_follow_frame_order_and_name_a_record_without_a_frame():
    from thermgen.data.sample import DataError
    from thermgen.metrics.attributes import flight_groups

    recs = [_rec(i, "train", tod, 60, 30, []) for i, tod in enumerate(["night", "day", "day", "night", "night"])]
    for r, frame in zip(recs, ["00012", "00003", "00004", "00020", "00001"]):
        r["meta"]["frame"] = frame
    # frame order: 1 night, 3 day, 4 day, 12 night, 20 night -> flights 0, 1, 1, 2, 2
    assert flight_groups(recs) == [2, 1, 1, 2, 0]
    from thermgen.metrics.attributes import flights_unusable

    assert "1.7 frames each on average" in flights_unusable(recs)  # single scenes, not flights
    assert flights_unusable(recs * 8) is None
    assert "1 flight(s)" in flights_unusable([r for r in recs if r["meta"]["time_of_day"] == "day"] * 10)
    del recs[3]["meta"]["frame"]
    with pytest.raises(DataError, match=r"t/train/0003.*meta\.frame"):
        flight_groups(recs)
    recs[3]["meta"]["frame"] = "x12"
    with pytest.raises(DataError, match="not a frame number"):
        flight_groups(recs)


@pytest.mark.parametrize("site_only", [True, False])
def test_held_out_flights_catch_a_judge_that_recognises_sites(tmp_path, site_only):
    """Six flights, each over its own site (one bright cell of the 4x4 grid the tiny features pool over). With
    ``site_only`` the time of day shows in nothing but the site, so the plain judge (test images from flights it was
    trained on) is perfect and the held-out-flight one is not; when day frames are also warmer overall, both are."""
    from thermgen.io import write_png16
    from thermgen.ircap.manifest import write_manifest
    from thermgen.judge import held_out_flights, train_judge

    rng = np.random.default_rng(0)
    recs = []
    for flight in range(6):
        tod = "night" if flight % 2 else "day"
        for split, n in (("train", 8), ("val", 2), ("test", 4)):
            for i in range(n):
                level = 0.3 if site_only or tod == "night" else 0.45
                img = np.clip(rng.normal(level, 0.02, (32, 32)), 0, 1)
                row, col = divmod(flight, 4)
                img[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] = 0.9
                name = f"{split}_{flight}_{i}.png"
                write_png16(tmp_path / name, (img * 65535).astype(np.uint16))
                r = _rec(len(recs), split, tod, 60, 30, [], name)
                r["meta"]["frame"] = str(flight * 100 + len(recs))
                recs.append(r)
    write_manifest(tmp_path / "manifest.jsonl", recs)
    train_judge(tmp_path / "manifest.jsonl", tmp_path / "judge", resolution=32, feature=PoolFeatures(), progress=False)
    rep = held_out_flights(tmp_path / "judge", tmp_path / "manifest.jsonl", feature=PoolFeatures(), progress=False)
    assert rep["n_flights"] == 6 and len(rep["flights"]) == 6 and rep["n_test"] == 24
    assert [f["n_train"] for f in rep["flights"]] == [8] * 6 and [f["n_test"] for f in rep["flights"]] == [4] * 6
    plain, held = rep["ceiling"]["time_of_day"]["accuracy"], rep["held_out_flights"]["time_of_day"]["accuracy"]
    assert plain == 1.0
    if site_only:
        assert held <= 0.7
    else:
        assert held == 1.0
    from thermgen.metrics.judging import flights_markdown

    md = flights_markdown(rep)
    assert md.count("| time_of_day |") == 1 and md.count("| day |") + md.count("| night |") == 6
