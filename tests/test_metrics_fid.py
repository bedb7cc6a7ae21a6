"""Specification of thermgen.metrics (FID/KID through clean-fid) and of `python -m thermgen.fid`.

Every test uses a tiny deterministic feature extractor (16-d), never the 2048-d Inception, except
the one that checks the offline Inception file loads (one image).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import cleanfid.fid as cfid
from cleanfid.utils import ResizeDataset
from thermgen.data.sample import DataError
from thermgen.metrics import (
    GENERATION_REPORT_KEYS,
    REPORT_KEYS,
    compute_metrics,
    evaluate_generation,
    fid_from_features,
    kid_from_features,
)
from thermgen.metrics.fid import ThermalImageDataset, fit_to_size, to_uint8


class TinyFeatures(nn.Module):
    """Deterministic 16-d features: 4x4 average pooling of the first channel, plus a nonlinearity."""

    name = "tiny-pool-16"

    def __init__(self, cache_id: str | None = None):
        super().__init__()
        if cache_id:
            self.cache_id = cache_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.adaptive_avg_pool2d(x[:, :1] / 255.0, 4).flatten(1)
        return torch.cat([p[:, :8], torch.sqrt(p[:, 8:] + 0.1)], dim=1)


def _blobs(rng: np.random.Generator, n: int, h: int, w: int, level: float) -> list[np.ndarray]:
    """n float images (H, W) in [0, 1]: a background level plus warm blobs and noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        img = np.full((h, w), level) + rng.normal(0, 0.05, (h, w))
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 6)
            img += rng.uniform(0.2, 0.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out.append(np.clip(img, 0, 1))
    return out


def _write8(folder: Path, imgs: list[np.ndarray], prefix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(imgs):
        Image.fromarray(to_uint8(img)).save(folder / f"{prefix}{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fidsets")
    rng = np.random.default_rng(0)
    return {
        "real": _write8(root / "real", _blobs(rng, 40, 32, 32, 0.3)),
        "fake": _write8(root / "fake", _blobs(rng, 36, 32, 32, 0.45)),
        "root": root,
    }


def _metrics(real, fake, tmp_path=None, **kw):
    kw.setdefault("feature", TinyFeatures())
    kw.setdefault("device", "cpu")
    kw.setdefault("progress", False)
    kw.setdefault("use_cache", False)
    return compute_metrics(real, fake, **kw)


# ----------------------------------------------------------------------------------------------
# Agreement with clean-fid


def test_fid_equals_cleanfid_compute_fid_on_the_same_folders(sets):
    ours = _metrics(sets["real"], sets["fake"])["fid"]
    theirs = cfid.compute_fid(str(sets["real"]), str(sets["fake"]), mode="clean", custom_feat_extractor=TinyFeatures(),
                              device=torch.device("cpu"), num_workers=0, verbose=False)
    assert theirs > 1e-3  # the two sets really differ, so the comparison means something
    assert abs(ours - theirs) / theirs < 1e-6


def test_features_equal_cleanfid_folder_features(sets):
    ours = _metrics(sets["real"], sets["fake"], return_features=True)["_real_features"]
    theirs = cfid.get_folder_features(str(sets["real"]), TinyFeatures(), num_workers=0, device=torch.device("cpu"), mode="clean", verbose=False)
    np.testing.assert_array_equal(ours, theirs)


def test_kid_mean_equals_cleanfid_kernel_distance_with_the_same_seed():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 8)), rng.normal(0.3, 1.0, size=(40, 8))
    mean, std, m = kid_from_features(a, b, num_subsets=20, max_subset_size=30, seed=7)
    np.random.seed(7)
    ref = cfid.kernel_distance(a, b, num_subsets=20, max_subset_size=30)
    assert m == 30
    assert mean == pytest.approx(ref, rel=1e-9)
    assert std > 0


def test_kid_leaves_the_global_numpy_random_state_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    kid_from_features(np.random.default_rng(0).normal(size=(10, 4)), np.random.default_rng(1).normal(size=(10, 4)), num_subsets=3)
    assert np.random.rand() == expected


def test_fid_of_a_set_with_itself_is_zero(sets):
    r = _metrics(sets["real"], sets["real"])
    assert r["fid"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dim, n", [(8, 50), (64, 400), (256, 600)])
def test_frechet_distance_equals_clean_fids_on_full_rank_covariances(dim, n):
    import cleanfid.fid as cfid

    rng = np.random.default_rng(dim)
    mix = rng.normal(size=(dim, dim)) / dim**0.5
    real = rng.normal(size=(n, dim)) @ mix
    fake = 0.8 * rng.normal(size=(n + 7, dim)) @ (mix + 0.1 * rng.normal(size=(dim, dim)) / dim**0.5) + 0.05
    assert fid_from_features(real, fake) == pytest.approx(float(cfid.fid_from_feats(real, fake)), rel=1e-6)
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-8 * dim)


def test_frechet_distance_names_mismatched_shapes():
    from thermgen.metrics.fid import frechet_distance

    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_needs_two_images_per_side():
    with pytest.raises(ValueError, match="N >= 2"):
        fid_from_features(np.zeros((1, 4)), np.zeros((5, 4)))


# ----------------------------------------------------------------------------------------------
# Thermal conversion and resolution


def test_16bit_images_are_scaled_not_clipped_like_cleanfid_would(tmp_path):
    rng = np.random.default_rng(2)
    v16 = (rng.uniform(0.2, 0.8, (24, 24)) * 65535).astype(np.uint16)
    Image.fromarray(v16).save(tmp_path / "a16.png")
    Image.fromarray(np.rint(v16 / 257).astype(np.uint8)).save(tmp_path / "a8.png")
    ours16 = ThermalImageDataset([tmp_path / "a16.png"], (24, 24))[0]
    ours8 = ThermalImageDataset([tmp_path / "a8.png"], (24, 24))[0]
    torch.testing.assert_close(ours16, ours8, rtol=0, atol=0)
    # clean-fid alone converts the 16-bit file with PIL's convert("RGB"), which saturates it.
    naive = ResizeDataset([str(tmp_path / "a16.png")], mode="clean")[0]
    assert naive.mean() > 250 and ours16.mean() < 210


def test_real_images_are_resized_to_the_generator_size(sets, tmp_path):
    rng = np.random.default_rng(3)
    big = _blobs(rng, 30, 48, 64, 0.3)
    real_big = _write8(tmp_path / "big", big)
    real_small = tmp_path / "small"
    real_small.mkdir()
    for i, img in enumerate(big):  # the same images brought to 32x32 by the documented rule, saved as 8-bit
        stored = to_uint8(img).astype(np.float32) / 255  # what the 8-bit file holds
        Image.fromarray(to_uint8(fit_to_size(stored, (32, 32), "none"))).save(real_small / f"{i:03d}.png")
    a = _metrics(real_big, sets["fake"])
    b = _metrics(real_small, sets["fake"])
    assert a["resolution"] == [32, 32]
    assert "generator's output size" in a["resolution_rule"]
    assert a["fid"] == pytest.approx(b["fid"], rel=1e-9)


def test_center_crop_keeps_the_aspect_ratio():
    img = np.zeros((40, 80), np.float32)
    img[:, 20:60] = 1.0  # the centre 40x40 square is white
    assert fit_to_size(img, (10, 10), "center").min() == pytest.approx(1.0, abs=1e-5)
    assert fit_to_size(img, (10, 10), "none").min() < 0.1


def test_explicit_size_applies_to_both_sides(sets):
    r = _metrics(sets["real"], sets["fake"], size=(16, 24))
    assert r["resolution"] == [16, 24]
    assert "given by the caller" in r["resolution_rule"]


def test_generated_images_of_mixed_sizes_need_an_explicit_size(sets, tmp_path):
    fake = _write8(tmp_path / "mixed", _blobs(np.random.default_rng(4), 3, 32, 32, 0.4))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(fake / "odd.png")
    with pytest.raises(DataError, match="different sizes"):
        _metrics(sets["real"], fake)


def test_true_colour_images_are_an_error_naming_the_file(sets, tmp_path):
    fake = _write8(tmp_path / "colour", _blobs(np.random.default_rng(5), 3, 32, 32, 0.4))
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(fake / "ironbow.png")
    with pytest.raises(DataError, match="ironbow.png"):
        _metrics(sets["real"], fake)


# ----------------------------------------------------------------------------------------------
# Real side: folder split / manifest


def _record(i: int, image: Path, split: str) -> dict:
    """A complete manifest record (contract 1) for one toy image."""
    return {"schema_version": 1, "id": f"x/{split}/{i}", "image": str(image), "split": split, "source": "toy",
            "width": 32, "height": 32, "global_caption": f"An infrared thermal image of scene {i}",
            "fine_caption": f"Thermal infrared image {i}", "objects": [], "meta": {}, "measurements": {},
            "captioner": {"name": "test", "version": "1", "seed": 0}}


def _manifest(tmp_path: Path, real: Path, test_ids: set[int]) -> Path:
    lines = []
    for i, p in enumerate(sorted(real.glob("*.png"))):
        split = "test" if i in test_ids else "train"
        lines.append(json.dumps(_record(i, p, split)))
    m = tmp_path / "manifest.jsonl"
    m.write_text("\n".join(lines) + "\n")
    return m


def test_manifest_real_side_keeps_only_the_requested_split(sets, tmp_path):
    m = _manifest(tmp_path, sets["real"], set(range(0, 40, 2)))
    r = _metrics(m, sets["fake"], split="test")
    assert r["n_real"] == 20
    assert r["real"]["kind"] == "manifest" and r["real"]["dataset"] == "toy" and r["real"]["split"] == "test"


def test_bad_manifest_line_names_file_and_line(sets, tmp_path):
    m = tmp_path / "bad.jsonl"
    m.write_text(json.dumps(_record(0, next(sets["real"].glob("*.png")), "test")) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl line 2"):
        _metrics(m, sets["fake"])


def test_folder_split_selects_the_subfolder(sets, tmp_path):
    _write8(tmp_path / "ds" / "val", _blobs(np.random.default_rng(6), 12, 32, 32, 0.3))
    r = _metrics(tmp_path / "ds", sets["fake"], split="val")
    assert r["n_real"] == 12 and r["real"]["split"] == "val" and r["real"]["dataset"] == "ds"


# ----------------------------------------------------------------------------------------------
# Reference cache


def test_reference_features_are_cached_and_reused(sets, tmp_path):
    kw = dict(feature=TinyFeatures(cache_id="tiny-v1"), use_cache=True, cache_dir=tmp_path / "cache")
    first = _metrics(sets["real"], sets["fake"], **kw)
    second = _metrics(sets["real"], sets["fake"], **kw)
    assert (first["real"]["cache"], second["real"]["cache"]) == ("miss", "hit")
    assert second["fid"] == first["fid"]
    name = Path(first["real"]["cache_file"]).name
    assert name.startswith("real_all_32x32_tiny-pool-16_") and name.endswith(".npz")


def test_cache_key_changes_with_image_content_and_resolution(sets, tmp_path):
    real = _write8(tmp_path / "r", _blobs(np.random.default_rng(7), 20, 32, 32, 0.3))
    kw = dict(feature=TinyFeatures(cache_id="tiny-v1"), use_cache=True, cache_dir=tmp_path / "cache")
    a = _metrics(real, sets["fake"], **kw)
    assert _metrics(real, sets["fake"], size=16, **kw)["real"]["cache"] == "miss"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(real / "000.png")  # one image changes
    b = _metrics(real, sets["fake"], **kw)
    assert b["real"]["cache"] == "miss"
    assert b["real"]["content_sha256"] != a["real"]["content_sha256"]
    assert b["fid"] != a["fid"]


def test_extractor_without_identity_is_not_cached(sets, tmp_path):
    r = _metrics(sets["real"], sets["fake"], use_cache=True, cache_dir=tmp_path / "cache")
    assert r["real"]["cache"] == "off"
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------------------------
# Report


def test_warns_when_a_side_has_fewer_images_than_the_feature_dimension(sets, tmp_path):
    few = _write8(tmp_path / "few", _blobs(np.random.default_rng(8), 10, 32, 32, 0.45))
    r = _metrics(sets["real"], few)
    assert len(r["warnings"]) == 1 and "fake side has 10 images, fewer than the feature dimension 16" in r["warnings"][0]
    assert _metrics(sets["real"], sets["fake"])["warnings"] == []


def test_generation_report_keys_are_the_documented_ones(sets, tmp_path):
    r = evaluate_generation(sets["real"], sets["fake"], None, tmp_path / "reports", feature=TinyFeatures(), device="cpu",
                            use_cache=False, progress=False, samples=4)
    saved = json.loads((tmp_path / "reports" / "generation.json").read_text())
    assert set(saved) == set(GENERATION_REPORT_KEYS)
    assert set(REPORT_KEYS) <= set(saved)
    for key in ("fid", "kid_mean", "kid_std", "n_real", "n_fake", "feature"):
        assert saved[key] == r[key]
    assert (saved["n_real"], saved["n_fake"], saved["feature"]) == (40, 36, "tiny-pool-16")
    md = (tmp_path / "reports" / "generation.md").read_text()
    assert f"{r['fid']:.3f}".rstrip("0").rstrip(".") in md and "32x32 px" in md
    assert Path(saved["outputs"]["samples_png"]).is_file()


def test_prompts_must_match_the_generated_images_one_to_one(sets, tmp_path):
    with pytest.raises(DataError, match="36 generated images but 2 prompts"):
        evaluate_generation(sets["real"], sets["fake"], ["a", "b"], tmp_path, feature=TinyFeatures(), device="cpu", use_cache=False, progress=False)


def test_generate_output_folder_is_read_through_its_index(sets, tmp_path):
    gen = _write8(tmp_path / "gen", _blobs(np.random.default_rng(9), 6, 32, 32, 0.45), prefix="prompt00_seed")
    Image.fromarray(np.zeros((64, 200), np.uint8)).save(gen / "grid.png")  # not a generated image
    records = [{"file": p.name, "prompt": f"An infrared thermal image of {i} cars", "prompt_fine": "Thermal infrared image"}
               for i, p in enumerate(sorted(gen.glob("prompt*.png")))]
    (gen / "generation.json").write_text(json.dumps({"images": records, "grid": "grid.png"}))
    r = evaluate_generation(sets["real"], gen, None, tmp_path / "rep", feature=TinyFeatures(), device="cpu", use_cache=False, progress=False, samples=0)
    assert r["n_fake"] == 6 and r["fake"]["kind"] == "generate-index"
    assert r["prompts"] == {"n": 6, "n_unique": 6, "source": "generation.json", "fine": True}


def test_report_folder_inside_the_generated_folder_is_refused(sets):
    with pytest.raises(ValueError, match="inside fake_dir"):
        evaluate_generation(sets["real"], sets["fake"], None, sets["fake"] / "reports", feature=TinyFeatures(), device="cpu", use_cache=False, progress=False)


# ----------------------------------------------------------------------------------------------
# Command


def test_command_defaults_to_the_standard_inception_features():
    # End to end with Inception is python -m thermgen.bench.fid_sanity (minutes: 2048x2048 sqrtm);
    # here: the default flag builds the offline Inception network.
    from thermgen.fid import build_parser
    from thermgen.metrics.fid import build_feature_extractor
    from thermgen.metrics.inception import INSTALL_HINT, InceptionFeatures, find_inception_weights

    assert build_parser().parse_args(["--real", "r", "--fake", "f", "--out", "o.json"]).feature == "inception"
    try:
        find_inception_weights()
    except FileNotFoundError:
        pytest.skip(f"FID Inception weights not installed ({INSTALL_HINT})")
    net = build_feature_extractor("inception", device="cpu")
    assert isinstance(net, InceptionFeatures) and net.name == "inception-v3-2015-12-05" and len(net.weights_sha256) == 64


def test_command_reports_a_missing_folder_as_an_error(tmp_path, capsys):
    from thermgen.fid import main

    rc = main(["--real", str(tmp_path / "nope"), "--fake", str(tmp_path / "gen"), "--out", str(tmp_path / "rep" / "r.json"), "--quiet"])
    assert rc == 2
    assert "nope" in capsys.readouterr().err


def test_command_help_explains_every_flag(capsys):
    from thermgen.fid import build_parser

    parser = build_parser()
    for action in parser._actions:
        assert action.help, f"flag {action.option_strings} has no help"
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "--feature" in capsys.readouterr().out


def test_prompt_files_in_each_format_are_read(tmp_path):
    from thermgen.fid import read_prompts

    (tmp_path / "p.txt").write_text("a cold road\na hot car\n")
    (tmp_path / "p.json").write_text(json.dumps({"000.png": "a cold road"}))
    (tmp_path / "p.jsonl").write_text(json.dumps({"image": "sub/000.png", "global_caption": "g", "fine_caption": "f"}) + "\n")
    assert read_prompts(tmp_path / "p.txt") == (["a cold road", "a hot car"], None)
    assert read_prompts(tmp_path / "p.json") == ({"000.png": "a cold road"}, None)
    assert read_prompts(tmp_path / "p.jsonl") == ({"000.png": "g"}, {"000.png": "f"})


def test_bad_prompt_line_names_file_and_line(tmp_path):
    from thermgen.fid import read_prompts

    (tmp_path / "p.jsonl").write_text(json.dumps({"image": "000.png", "prompt": "x"}) + "\n" + json.dumps({"image": "001.png"}) + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl:2: needs an image field"):
        read_prompts(tmp_path / "p.jsonl")


@pytest.mark.parametrize("shape,ext", [((32, 32), "png"), ((51, 64), "jpg")])
def test_dataset_items_equal_cleanfid_resize_dataset_bit_for_bit(tmp_path, shape, ext):
    """One bicubic resize of the grey channel, copied three times, equals clean-fid's three per-channel resizes."""
    from cleanfid.utils import ResizeDataset

    rng = np.random.default_rng(3)
    path = tmp_path / f"img.{ext}"
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(path)
    ours = ThermalImageDataset([path], size=(shape[1], shape[0]))[0]  # already at the comparison size
    theirs = ResizeDataset([str(path)], mode="clean")[0]
    assert ours.shape == theirs.shape == (3, 299, 299)
    assert ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dim, n, m", [(64, 20, 33), (256, 60, 45), (1024, 30, 70)])
def test_fid_with_fewer_images_than_dimensions_equals_the_covariance_route_and_clean_fid(dim, n, m):
    """The sample-space route (nuclear norm of A B') against the D x D eigendecomposition route and clean-fid.

    Within 1e-6, not float64 rounding: the D x D routes take square roots of the rounding noise in the D - N null
    space of the covariances (sqrt(1e-16) per eigenvalue, D - N of them), which the sample-space route never forms."""
    import cleanfid.fid as cfid
    from thermgen.metrics.fid import frechet_distance

    rng = np.random.default_rng(dim + n)
    real = rng.normal(size=(n, dim)) * rng.random(dim)
    fake = 0.7 * rng.normal(size=(m, dim)) * rng.random(dim) + 0.1
    ours = fid_from_features(real, fake)
    cov_route = frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    assert ours == pytest.approx(cov_route, rel=1e-6)
    if dim <= 256:  # SciPy's sqrtm at high dimension takes long here
        assert ours == pytest.approx(float(cfid.fid_from_feats(real, fake)), rel=1e-6)
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-9 * dim)
