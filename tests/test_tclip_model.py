"""TCLIP: encoders and variants, fusion, save/load, base specs."""

import json

import pytest
import torch
import torch.nn.functional as F

import tclip
from tclip.model import BaseSpec, build_base, fuse, parse_base_spec

CAPS_G = ["An infrared thermal image of a road at night.", "An infrared thermal image of a parking lot by day."]
CAPS_F = ["Thermal infrared image: engines hot.", "Thermal infrared image: pavement warm, sky cold."]


@pytest.fixture(scope="module")
def model(tiny_tclip):
    return tiny_tclip


@pytest.fixture()
def images():
    return torch.rand(2, 1, 80, 100, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("variant", ["base", "global", "fine", "dual"])
def test_encode_image_returns_unit_norm_embeddings(model, images, variant):
    with torch.no_grad():
        emb = model.encode_image(images, variant=variant)
    assert emb.shape == (2, 64)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))


def test_fresh_adapters_leave_the_base_unchanged(images):
    torch.manual_seed(0)
    fresh = tclip.TCLIP.from_base("tclip-tiny").eval()
    with torch.no_grad():
        base = fresh.encode_image(images, variant="base")
        for v in ("global", "fine", "dual"):
            torch.testing.assert_close(fresh.encode_image(images, variant=v), base)


def test_adapters_change_the_embedding(model, images):
    with torch.no_grad():
        assert (model.encode_image(images, "global") - model.encode_image(images, "base")).abs().max() > 1e-3
        assert (model.encode_image(images, "global") - model.encode_image(images, "fine")).abs().max() > 1e-3


def test_dual_image_embedding_is_the_fused_global_and_fine(model, images):
    with torch.no_grad():
        g, f = model.encode_image(images, "global"), model.encode_image(images, "fine")
        expected = F.normalize(0.8 * g + 0.2 * f, dim=-1)
        torch.testing.assert_close(model.encode_image(images, "dual"), expected)
        expected_half = F.normalize(0.5 * g + 0.5 * f, dim=-1)
        torch.testing.assert_close(model.encode_image(images, "dual", alpha=0.5), expected_half)


def test_dual_text_routes_each_caption_through_its_own_adapter(model):
    with torch.no_grad():
        g = model.encode_text(CAPS_G, variant="global")
        f = model.encode_text(CAPS_F, variant="fine")
        torch.testing.assert_close(model.encode_text(CAPS_G, CAPS_F, variant="dual"), fuse(g, f, 0.8))


def test_tclip_global_sends_one_caption_through_both_adapters(model):
    with torch.no_grad():
        g = model.encode_text(CAPS_G, variant="global")
        f = model.encode_text(CAPS_G, variant="fine")
        torch.testing.assert_close(model.encode_text(CAPS_G, variant="tclip-global"), fuse(g, f, 0.8))
        torch.testing.assert_close(model.encode_text(CAPS_G, variant="tclip-fine"), fuse(g, f, 0.8))


def test_dual_text_without_fine_captions_is_an_error(model):
    with pytest.raises(ValueError, match="texts_fine"):
        model.encode_text(CAPS_G, variant="dual")


def test_unknown_variant_is_an_error(model, images):
    with pytest.raises(ValueError, match="variant"):
        model.encode_image(images, variant="mixed")


def test_images_with_wrong_shape_are_rejected(model):
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model.encode_image(torch.rand(2, 2, 8, 8))


def test_one_frozen_backbone_is_shared_by_both_adapters(model):
    n_base = sum(p.numel() for n, p in model.clip.named_parameters() if "lora_" not in n)
    plain, _ = build_base("tclip-tiny")
    assert n_base == sum(p.numel() for p in plain.parameters())
    assert not any(p.requires_grad for n, p in model.clip.named_parameters() if "lora_" not in n)


def test_train_adapter_makes_only_that_adapter_trainable(model):
    params = model.train_adapter("fine")
    names = {n for n, p in model.clip.named_parameters() if p.requires_grad}
    assert names and all(".fine." in n and "lora_" in n for n in names)
    assert sum(p.numel() for p in params) == sum(p.numel() for n, p in model.clip.named_parameters() if ".fine." in n)
    model.freeze_adapters()
    assert not any(p.requires_grad for p in model.parameters())


def test_save_then_load_gives_identical_embeddings(model, images, tmp_path):
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "tclip_config.json").read_text())
    assert cfg["adapters"] == ["global", "fine"] and cfg["base"]["base_weights"] == "base.safetensors"
    for adapter in ("global", "fine"):
        assert (tmp_path / "m" / "adapters" / adapter / "adapter_model.safetensors").is_file()
    loaded = tclip.load(tmp_path / "m")
    with torch.no_grad():
        for v in ("base", "global", "fine", "dual"):
            assert torch.equal(loaded.encode_image(images, v), model.encode_image(images, v))
        assert torch.equal(loaded.encode_text(CAPS_G, CAPS_F), model.encode_text(CAPS_G, CAPS_F))


def test_single_adapter_model_refuses_the_missing_adapter(images, tmp_path):
    m = tclip.TCLIP.from_base("tclip-tiny", adapters=["global"])
    m.save(tmp_path / "g")
    loaded = tclip.load(tmp_path / "g")
    assert loaded.adapters == ["global"]
    with pytest.raises(ValueError, match="no 'fine' adapter"):
        loaded.encode_image(images, "dual")


def test_load_names_the_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="tclip_config.json"):
        tclip.load(tmp_path)


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("tclip-tiny", BaseSpec("tclip-tiny", None, "scratch")),
        ("ViT-B-16:openai", BaseSpec("ViT-B-16", "openai", "pretrained")),
        ("ViT-B-16:laion2b_s34b_b88k", BaseSpec("ViT-B-16", "laion2b_s34b_b88k", "pretrained")),
        ("hf-hub:timm/ViT-B-16-SigLIP", BaseSpec("hf-hub:timm/ViT-B-16-SigLIP", None, "schema")),
    ],
)
def test_base_spec_grammar(spec, expected):
    assert parse_base_spec(spec) == expected


def test_base_spec_with_missing_checkpoint_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        parse_base_spec(f"tclip-tiny:{tmp_path}/nope.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_base_from_a_local_checkpoint_file_loads_its_weights(tmp_path, suffix):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source, _ = build_base("tclip-tiny")
    path = tmp_path / f"ckpt{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded, info = build_base(f"tclip-tiny:{path}")
    assert info["weights_kind"] == "file"
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # A T-CLIP built on that file stores the base weights in its folder.
    m = tclip.TCLIP(loaded, info)
    m.save(tmp_path / "m")
    assert (tmp_path / "m" / "base.safetensors").is_file()


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="no-such-arch"):
        build_base("no-such-arch")


def test_the_suite_cannot_reach_the_network():
    import socket

    # By name: tests/conftest.py and tests/gpu/conftest.py are both importable as "conftest".
    with pytest.raises(RuntimeError, match="must run offline") as err:
        socket.create_connection(("203.0.113.1", 443), timeout=1)  # TEST-NET-3: never routable
    assert type(err.value).__name__ == "NetworkUsed"


def test_training_an_adapter_leaves_the_frozen_bases_batch_norm_statistics_alone():
    """A ResNet image tower's running statistics are part of the frozen base: train mode must not move them."""
    torch.manual_seed(0)
    m = tclip.TCLIP.from_base("tclip-tiny-rn")
    before = {k: v.clone() for k, v in m.base_model.state_dict().items() if "running_" in k or "num_batches" in k}
    assert before
    m.train_adapter("global")
    m.train()
    img, txt = m(m.preprocess(torch.rand(4, 1, 64, 64)), m.tokenize(["a", "b", "c", "d"]), "global")
    (img.sum() + txt.sum()).backward()
    after = m.base_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(p.grad is not None for n, p in m.clip.named_parameters() if "lora_" in n and "visual" in n)
