"""Specification of the T-CLIP generation metrics: thermal-domain FD and text alignment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tclip
from thermgen.data.sample import DataError
from thermgen.metrics import evaluate_generation
from thermgen.metrics.fid import fid_from_features, to_uint8
from thermgen.metrics.features import TCLIPImageFeatures
from thermgen.metrics.tclip_metrics import TCLIP_REPORT_KEYS, text_alignment


@pytest.fixture(scope="module")
def tclip_dir(tmp_path_factory, tiny_tclip) -> Path:
    """A tiny T-CLIP with non-zero adapters, saved locally (no weights from any hub)."""
    return tiny_tclip.save(tmp_path_factory.mktemp("tclip") / "tclip")


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tclipsets")
    rng = np.random.default_rng(0)
    out = {}
    for name, n, level in (("real", 24, 0.3), ("fake", 20, 0.5)):
        d = root / name
        d.mkdir()
        for i in range(n):
            img = np.clip(level + rng.normal(0, 0.1, (32, 40)), 0, 1)
            Image.fromarray(to_uint8(img)).save(d / f"{i:03d}.png")
        out[name] = d
    lines = [json.dumps({"schema_version": 1, "id": f"toy/test/{i}", "image": str(p), "split": "test", "source": "toy",
                         "width": 40, "height": 32, "objects": [], "meta": {}, "measurements": {},
                         "captioner": {"name": "test", "version": "1", "seed": 0},
                         "global_caption": f"An infrared thermal image of {i % 5} cars", "fine_caption": f"Thermal infrared image: {i} hot engines"})
             for i, p in enumerate(sorted(out["real"].glob("*.png")))]
    out["manifest"] = root / "manifest.jsonl"
    out["manifest"].write_text("\n".join(lines) + "\n")
    out["prompts"] = [f"An infrared thermal image of {i % 4} people" for i in range(20)]
    return out


# ----------------------------------------------------------------------------------------------
# text_alignment: a plain function over embeddings


def test_text_alignment_is_perfect_when_each_image_matches_its_own_prompt():
    emb = np.eye(4)
    r = text_alignment(emb, emb, ["a", "b", "c", "d"])
    assert (r["cosine_mean"], r["r1"], r["r1_chance"], r["n_unique_prompts"]) == (1.0, 1.0, 0.25, 4)


def test_text_alignment_r1_is_zero_when_every_image_matches_another_prompt():
    txt = np.eye(4)
    img = np.roll(txt, 1, axis=0)
    r = text_alignment(img, txt, ["a", "b", "c", "d"])
    assert r["r1"] == 0.0 and r["cosine_mean"] == pytest.approx(0.0)


def test_images_sharing_a_prompt_are_not_penalised_for_each_other():
    txt = np.array([[1.0, 0], [1.0, 0], [0, 1.0]])
    img = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    r = text_alignment(img, txt, ["a", "a", "b"])
    assert r["r1"] == 1.0 and r["n_unique_prompts"] == 2 and r["r1_chance"] == 0.5


def test_text_alignment_normalises_the_embeddings():
    txt = np.eye(3)
    r = text_alignment(5.0 * txt, 0.1 * txt, ["a", "b", "c"])
    assert r["cosine_mean"] == pytest.approx(1.0)


def test_text_alignment_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="N prompts"):
        text_alignment(np.eye(3), np.eye(3), ["a", "b"])


# ----------------------------------------------------------------------------------------------
# With a real (tiny) T-CLIP


def test_tclip_features_are_the_dual_image_embeddings(tclip_dir):
    x = torch.rand(3, 1, 32, 40, generator=torch.Generator().manual_seed(3))
    ours = TCLIPImageFeatures(tclip_dir, device="cpu")(x)
    ref = tclip.load(tclip_dir).eval().encode_image(x, variant="dual")
    torch.testing.assert_close(ours, ref)
    assert ours.shape == (3, 64)


def test_tclip_feature_cache_id_follows_the_folder_content(tclip_dir, tmp_path):
    a = TCLIPImageFeatures(tclip_dir, device="cpu").cache_id
    assert a == TCLIPImageFeatures(tclip_dir, device="cpu").cache_id
    import shutil

    other = shutil.copytree(tclip_dir, tmp_path / "copy")
    cfg = json.loads((other / "tclip_config.json").read_text())
    cfg["fusion_alpha"] = 0.5
    (other / "tclip_config.json").write_text(json.dumps(cfg))
    assert TCLIPImageFeatures(other, device="cpu").cache_id != a


def test_generation_report_holds_tclip_fd_and_text_alignment(sets, tclip_dir, tmp_path):
    def pooled(x: torch.Tensor) -> torch.Tensor:  # a tiny clean-fid-style extractor for the main FID
        return torch.nn.functional.adaptive_avg_pool2d(x[:, :1] / 255, 2).flatten(1)

    r = evaluate_generation(sets["manifest"], sets["fake"], sets["prompts"], tmp_path, feature=pooled, tclip_dir=tclip_dir,
                            split="test", device="cpu", use_cache=False, progress=False, samples=0, kid_subsets=10)
    t = r["tclip"]
    assert set(t) == set(TCLIP_REPORT_KEYS)
    assert t["feature"] == "tclip-dual" and t["feature_dim"] == 64 and (t["n_real"], t["n_fake"]) == (24, 20)
    assert t["fd"] > 0
    ta = t["text_alignment"]
    assert ta["n"] == 20 and ta["n_unique_prompts"] == 4 and ta["r1_chance"] == 0.25 and ta["text_variant"] == "tclip-global"
    assert -1 <= ta["cosine_mean"] <= 1 and 0 <= ta["r1"] <= 1
    # The real images against their own manifest captions: the reference, through the dual text path.
    assert t["real_text_alignment"]["text_variant"] == "dual" and t["real_text_alignment"]["n"] == 24
    assert any("T-CLIP FD" in w and "feature dimension 64" in w for w in r["warnings"])
    md = (tmp_path / "generation.md").read_text()
    assert "T-CLIP R@1" in md and "reference: real images" in md


def test_tclip_as_main_feature_reuses_its_embeddings(sets, tclip_dir, tmp_path):
    r = evaluate_generation(sets["real"], sets["fake"], None, tmp_path, feature=f"tclip:{tclip_dir}", device="cpu",
                            use_cache=False, progress=False, samples=0, kid_subsets=10)
    assert r["feature"] == "tclip-dual" and r["fid"] == r["tclip"]["fd"]
    assert r["tclip"]["real_cache"] == "reused" and r["tclip"]["text_alignment"] is None


def test_tclip_fd_is_clean_fid_frechet_distance_of_the_embeddings(sets, tclip_dir, tmp_path):
    r = evaluate_generation(sets["real"], sets["fake"], None, tmp_path, feature=f"tclip:{tclip_dir}", device="cpu",
                            use_cache=False, progress=False, samples=0, kid_subsets=10)
    model = tclip.load(tclip_dir).eval()

    def emb(folder):
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(p), np.float32) / 255)[None] for p in sorted(folder.glob("*.png"))])
        with torch.no_grad():
            return model.encode_image(x, variant="dual").numpy()

    assert r["fid"] == pytest.approx(fid_from_features(emb(sets["real"]), emb(sets["fake"])), rel=1e-5)


def test_command_with_tclip_feature_and_prompt_file(sets, tclip_dir, tmp_path, capsys):
    from thermgen.fid import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"image": f"{i:03d}.png", "prompt": p, "prompt_fine": "Thermal infrared image: warm"}) + "\n"
                               for i, p in enumerate(sets["prompts"])))
    out = tmp_path / "r" / "generation.json"
    rc = main(["--real", str(sets["manifest"]), "--split", "test", "--fake", str(sets["fake"]), "--feature", f"tclip:{tclip_dir}",
               "--prompts", str(prompts), "--out", str(out), "--device", "cpu", "--no-cache", "--quiet", "--kid-subsets", "10"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["tclip"]["text_alignment"]["text_variant"] == "dual"
    assert rep["prompts"] == {"n": 20, "n_unique": 4, "source": "mapping", "fine": True}
    assert "R@1" in capsys.readouterr().out


def test_prompt_file_missing_an_image_is_an_error(sets, tclip_dir, tmp_path):
    with pytest.raises(DataError, match="no entry in prompts for generated image '019.png'"):
        evaluate_generation(sets["real"], sets["fake"], {f"{i:03d}": "x" for i in range(19)}, tmp_path, feature=f"tclip:{tclip_dir}",
                            device="cpu", use_cache=False, progress=False, samples=0)
