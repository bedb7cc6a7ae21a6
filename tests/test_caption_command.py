"""`python -m thermgen.caption`: the must-show figures on HIT-UAV and on synthetic ground truth."""

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from thermgen.caption import caption_samples, main
from thermgen.ircap.backends import validate_captions
from thermgen.ircap.facts import Fact
from thermgen.ircap.manifest import read_manifest, resolve_image
from thermgen.ircap.render import FINE_PREFIX, GLOBAL_PREFIX, count_tokens, parse_counts
from thermgen.ircap.report import stated_time

HIT_LABELS = ["Person", "Car", "Bicycle", "OtherVehicle"]


@pytest.fixture(scope="module")
def hit_test_run(hit_uav_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("hit") / "manifest.jsonl"
    rc = main(["--source", "hit-uav", "--root", str(hit_uav_root), "--split", "test", "--out", str(out), "--no-progress"])
    assert rc == 0
    return out, read_manifest(out), json.loads(out.with_name("manifest.report.json").read_text())


def _annotation(hit_uav_root):
    """Counts per image straight from the upstream annotation file (independent of the adapter)."""
    d = json.loads((hit_uav_root / "normal_json" / "annotations" / "test.json").read_text())
    cats = {c["id"]: c["name"] for c in d["categories"]}
    by_id = {im["id"]: im["filename"] for im in d["images"]}
    counts = {name.rsplit(".", 1)[0]: Counter() for name in by_id.values()}
    for a in d["annotation"]:
        if cats[a["category_id"]] != "DontCare":
            counts[by_id[a["image_id"]].rsplit(".", 1)[0]][cats[a["category_id"]]] += 1
    return counts


def test_hituav_test_split_has_579_records_with_two_captions_within_77_tokens(hit_test_run):
    out, recs, _ = hit_test_run
    assert len(recs) == 579
    for r in recs:
        assert r["global_caption"].startswith(GLOBAL_PREFIX) and r["fine_caption"].startswith(FINE_PREFIX)
        assert count_tokens(r["global_caption"]) <= 77 and count_tokens(r["fine_caption"]) <= 77
        assert resolve_image(r, out).is_file()


def test_hituav_time_of_day_agrees_with_the_file_name_for_every_image(hit_test_run):
    _, recs, _ = hit_test_run
    for r in recs:
        expected = {"0": "day", "1": "night"}[r["id"].rsplit("/", 1)[1][0]]
        assert stated_time(r["global_caption"]) == expected, r["global_caption"]
        assert stated_time(r["fine_caption"]) in (expected, None), r["fine_caption"]


def test_hituav_every_stated_count_and_label_agrees_with_the_annotation_file(hit_test_run, hit_uav_root):
    _, recs, _ = hit_test_run
    truth = _annotation(hit_uav_root)
    for r in recs:
        t = truth[r["id"].rsplit("/", 1)[1]]
        # Global caption: every label present is stated once with its exact count, no other label.
        assert parse_counts(r["global_caption"], HIT_LABELS) == {lab: [n] for lab, n in t.items()}, r["global_caption"]
        # Fine caption: groups never exceed the annotated count, and never name an absent label.
        for lab, found in parse_counts(r["fine_caption"], HIT_LABELS).items():
            assert sum(found) <= t[lab], (r["fine_caption"], dict(t))


def test_hituav_global_captions_are_distinct_for_at_least_90_percent(hit_test_run):
    _, recs, report = hit_test_run
    share = len({r["global_caption"] for r in recs}) / len(recs)
    assert share >= 0.90
    assert report["summary"]["distinct_global_share"] == pytest.approx(share, abs=1e-4)
    print(f"\nHIT-UAV test: distinct global captions {share:.1%}, "
          f"fine {report['summary']['distinct_fine_share']:.1%}, {report['elapsed_s']:.1f} s for 579 images")


def test_hituav_captions_state_no_kelvin_and_pass_their_own_validator(hit_test_run):
    _, recs, _ = hit_test_run
    for r in recs:
        assert not re.search(r"\d\s*K\b|kelvin", r["global_caption"] + r["fine_caption"])  # 8-bit AGC: relative only
        facts = [Fact(**f) for f in r["facts"]]
        scene = [f for f in facts if f.subject == "scene"]
        per_obj = [[f for f in facts if f.subject == f"object:{i}"] for i in range(len(r["objects"]))]
        labels = [o["label"] for o in r["objects"]]
        assert validate_captions(r["global_caption"], r["fine_caption"], scene, per_obj, labels) == [], r["id"]


def test_hituav_every_stated_fact_traces_to_a_measured_fact(hit_test_run):
    # Nothing is stated that the rules did not decide from measurements or metadata.
    _, recs, _ = hit_test_run
    n_claims = 0
    for r in recs:
        decided = {(f["name"], str(f["value"]), f["subject"]) for f in r["facts"]}
        for st in r["stated"]:
            if st["fact"] == "count":
                continue
            subjects = [f"object:{i}" for i in st["objects"]] if "objects" in st else ["scene"]
            for subj in subjects:
                assert (st["fact"], str(st["value"]), subj) in decided, (r["id"], st)
                n_claims += 1
        for o, m in zip(r["objects"], r["measurements"]["objects"]):
            if m.get("contrast_rel") is None:
                assert not {"polarity", "vehicle_state", "person_heat"} & set(o["facts"]), r["id"]
    assert n_claims > 1000


def test_hituav_report_files_are_written_beside_the_manifest(hit_test_run):
    out, _, report = hit_test_run
    for suffix in (".report.json", ".report.md", ".report.tokens.png"):
        assert out.with_name("manifest" + suffix).is_file()
    assert report["checks"]["time_of_day"] == {"with_metadata": 579, "agree": 579}
    assert report["checks"]["counts"] == {"records": 579, "agree": 579}
    assert report["summary"]["over_limit"] == 0


def test_synthetic_state_claims_agree_with_ground_truth(tmp_path):
    from thermgen.data import load_samples
    from thermgen.data.synthetic import generate

    root = generate(tmp_path / "syn", n=150, size=96, seed=3, progress=False)
    samples, _ = load_samples("synthetic", root)
    report = caption_samples(samples, tmp_path / "cap" / "manifest.jsonl", progress=False)
    gt = report["ground_truth"]
    # Computed here from the manifest and the generator's truth, independently of the report.
    claims = agree = 0
    claimed_objs = state_objs = 0
    by_id = {f"synthetic/{s.split}/{s.image_id}": s for s in samples}
    for r in read_manifest(tmp_path / "cap" / "manifest.jsonl"):
        s = by_id[r["id"]]
        seen = set()
        for st in r["stated"]:
            if st["fact"] == "vehicle_state":
                for i in st["objects"]:
                    if ("v", i) not in seen:
                        seen.add(("v", i)); claims += 1
                        want = ("running", "just_parked") if st["value"] == "running" else ("parked_cold",)
                        agree += s.boxes[i].attrs["state"] in want
            elif st["fact"] == "person_heat" and st["value"] == "warm":
                for i in st["objects"]:
                    if ("p", i) not in seen:
                        seen.add(("p", i)); claims += 1
                        agree += s.boxes[i].attrs["contrast_k"] > 0
            elif st["fact"] in ("wet_surface", "cold_sky") and (st["fact"], None) not in seen:
                seen.add((st["fact"], None)); claims += 1
                agree += (any(x["state"] == "wet" for x in s.meta["surfaces"]) if st["fact"] == "wet_surface"
                          else s.meta["sky"]["visible"])
        objs = {i for kind, i in seen if i is not None}
        for i, b in enumerate(s.boxes):
            if b.label in ("Car", "Person"):
                state_objs += 1
                claimed_objs += i in objs
    assert claims >= 50
    assert agree / claims >= 0.95
    assert (gt["claims"], gt["agree"]) == (claims, agree)
    assert gt["state_claim_share"] == pytest.approx(claimed_objs / state_objs, abs=1e-4)
    assert 0.2 <= gt["state_claim_share"] <= 1.0
    print(f"\nsynthetic: {agree}/{claims} state claims agree ({agree / claims:.1%}); "
          f"objects with a state claim {gt['state_claim_share']:.1%}")


def test_unknown_root_exits_with_a_clear_error(tmp_path, capsys):
    rc = main(["--source", "hit-uav", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "m.jsonl"), "--no-progress"])
    assert rc == 2
    assert "missing" in capsys.readouterr().err


def test_help_explains_every_flag():
    out = subprocess.run([sys.executable, "-m", "thermgen.caption", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--source", "--root", "--split", "--out", "--backend", "--model", "--base-url", "--seed", "--report",
                 "--skip-invalid", "--limit", "--no-progress"):
        assert flag in out
    assert "default" in out


def test_folder_dataset_with_16bit_images_and_shipped_captions(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "mycam"
    (root / "test").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        img = (rng.normal(20000, 300, (48, 64)).clip(0, 65535)).astype(np.uint16)
        img[10:20, 20:26] = 40000  # a warm person
        Image.fromarray(img).save(root / "test" / f"f{i}.png")
    rows = [{"file_name": f"test/f{i}.png", "caption": f"my caption {i}", "time_of_day": "night",
             "objects": [{"label": "Person", "box": [18, 8, 10, 14]}]} for i in range(3)]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run" / "manifest.jsonl"
    assert main(["--source", "folder", "--root", str(root), "--out", str(out), "--no-progress"]) == 0
    recs = read_manifest(out)
    assert [r["source_captions"]["caption"] for r in recs] == ["my caption 0", "my caption 1", "my caption 2"]
    for r in recs:
        assert r["source"] == "folder" and resolve_image(r, out).is_file()
        assert parse_counts(r["global_caption"], ["Person"]) == {"Person": [1]}
        assert r["objects"][0]["facts"]["person_heat"] == "warm" and "body heat" in r["fine_caption"]
    assert out.with_name("manifest.log").read_text().count("wrote 3 records") == 1


def test_same_seed_gives_a_byte_identical_manifest(hit_uav_root, tmp_path):
    from thermgen.data import load_samples

    samples, _ = load_samples("hit-uav", hit_uav_root, split="val")
    samples = samples[:40]
    a, b, c = (tmp_path / n / "m.jsonl" for n in ("a", "b", "c"))
    caption_samples(samples, a, seed=0, progress=False)
    caption_samples(samples, b, seed=0, progress=False)
    caption_samples(samples, c, seed=1, progress=False)
    assert a.read_bytes() == b.read_bytes()
    ga, gc = ([r["global_caption"] for r in read_manifest(p)] for p in (a, c))
    assert sum(x != y for x, y in zip(ga, gc)) >= 30  # another seed, other phrasings


def test_variants_rephrase_the_same_facts_and_leave_the_main_captions_unchanged(hit_uav_root, tmp_path):
    from thermgen.data import load_samples

    samples, _ = load_samples("hit-uav", hit_uav_root, split="val")
    samples = samples[:30]
    plain, extra = tmp_path / "p" / "m.jsonl", tmp_path / "v" / "m.jsonl"
    caption_samples(samples, plain, seed=0, progress=False)
    caption_samples(samples, extra, seed=0, progress=False, variants=3)
    recs_p, recs_v = read_manifest(plain), read_manifest(extra)
    rephrased = 0
    for p, v in zip(recs_p, recs_v):
        assert "caption_variants" not in p
        assert (p["global_caption"], p["fine_caption"]) == (v["global_caption"], v["fine_caption"])
        alts = v["caption_variants"]
        assert len(alts["global"]) == len(alts["fine"]) == 3
        counts = parse_counts(v["global_caption"], HIT_LABELS)
        for g in alts["global"]:
            assert g.startswith(GLOBAL_PREFIX) and count_tokens(g) <= 77
            assert parse_counts(g, HIT_LABELS) == counts  # same facts, other words
            rephrased += g != v["global_caption"]
        for f in alts["fine"]:
            assert f.startswith(FINE_PREFIX) and count_tokens(f) <= 77
    assert rephrased >= 60  # of 90 variants, most read differently


def test_negative_variants_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--source", "hit-uav", "--root", str(tmp_path), "--out", str(tmp_path / "m.jsonl"), "--variants", "-1"])
    assert exc.value.code == 2
    with pytest.raises(ValueError, match="variants must be >= 0"):
        caption_samples([], tmp_path / "m.jsonl", variants=-1, progress=False)


def _folder_with_bad_images(root):
    """Three good grey PNGs, one true-colour PNG and one truncated JPEG."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((32, 40)) * 255).astype(np.uint8)).save(root / f"ok{i}.png")
    Image.fromarray((rng.random((32, 40, 3)) * 255).astype(np.uint8)).save(root / "colour.png")
    Image.fromarray((rng.random((32, 40)) * 255).astype(np.uint8)).save(root / "cut.jpg")
    data = (root / "cut.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])


def test_skip_invalid_leaves_out_unreadable_images_and_reports_each(tmp_path, capsys):
    root = tmp_path / "cam"
    _folder_with_bad_images(root)
    out = tmp_path / "run" / "manifest.jsonl"
    assert main(["--source", "folder", "--root", str(root), "--out", str(out), "--no-progress", "--skip-invalid"]) == 0
    assert sorted(r["id"].rsplit("/", 1)[-1] for r in read_manifest(out)) == ["ok0", "ok1", "ok2"]
    assert "skipped 2" in capsys.readouterr().out
    skipped = json.loads(out.with_name("manifest.report.json").read_text())["skipped"]
    assert skipped["total"] == 2
    assert skipped["counts"] == {"true colour image": 1, "truncated or corrupt image": 1}
    assert "colour.png" in skipped["examples"]["true colour image"][0]
    assert "cut.jpg" in skipped["examples"]["truncated or corrupt image"][0]
    assert "skipped as invalid" in out.with_name("manifest.report.md").read_text()


def test_without_skip_invalid_a_bad_image_stops_the_run_naming_the_file(tmp_path, capsys):
    root = tmp_path / "cam"
    _folder_with_bad_images(root)
    rc = main(["--source", "folder", "--root", str(root), "--out", str(tmp_path / "m.jsonl"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "colour.png" in err or "cut.jpg" in err


def test_skip_invalid_with_every_image_bad_is_an_error(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    root = tmp_path / "cam"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8) + np.arange(3, dtype=np.uint8) * 80).save(root / "a.png")
    out = tmp_path / "m.jsonl"
    out.write_text("an earlier manifest\n")
    rc = main(["--source", "folder", "--root", str(root), "--out", str(out), "--no-progress", "--skip-invalid"])
    assert rc == 2
    assert "every image was skipped" in capsys.readouterr().err
    assert out.read_text() == "an earlier manifest\n"  # left as it was, as the message says


def test_skip_report_round_trips_so_captioning_counts_on_from_the_loader():
    from thermgen.data.sample import SkipReport

    loader = SkipReport()
    loader.add("missing image file", "a.png")
    loader.add("missing image file", "b.png")
    again = SkipReport.from_dict(loader.to_dict())
    again.add("truncated or corrupt image", "c.jpg")
    assert again.to_dict() == {"total": 3, "counts": {"missing image file": 2, "truncated or corrupt image": 1},
                               "examples": {"missing image file": ["a.png", "b.png"],
                                            "truncated or corrupt image": ["c.jpg"]}}
    assert SkipReport.from_dict(None).total == 0


def test_terse_variants_are_stored_after_the_rephrasings_within_the_token_budget(hit_uav_root, tmp_path):
    out = tmp_path / "m.jsonl"
    assert main(["--source", "hit-uav", "--root", str(hit_uav_root), "--split", "val", "--limit", "12", "--out", str(out),
                 "--variants", "1", "--terse-variants", "2", "--no-progress"]) == 0
    for r in read_manifest(out):
        g = r["caption_variants"]["global"]
        assert len(g) == 3 and len(r["caption_variants"]["fine"]) == 1
        assert g[0].startswith(GLOBAL_PREFIX) and not any(t.startswith(GLOBAL_PREFIX) for t in g[1:])
        assert all(count_tokens(t) <= 77 for t in g)
        assert all(parse_counts(t, HIT_LABELS) == parse_counts(r["global_caption"], HIT_LABELS) for t in g[1:])
    with pytest.raises(SystemExit):
        main(["--source", "hit-uav", "--root", str(hit_uav_root), "--out", str(out), "--terse-variants", "-1"])
