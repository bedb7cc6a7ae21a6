"""LoRA on open_clip attention: exact q/k/v split, the W + B @ A * scale reference, parameter counts."""

import pytest
import torch
from torch import nn

import tclip
from tclip.lora import (
    QKVAttention,
    fuse_attention_state_dict,
    lora_parameter_count,
    make_lora_config,
    merged_base_state_dict,
    split_attention,
)
from tclip.model import _instantiate, get_arch_config


def _random_lora(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("batch_first", [True, False])
def test_qkv_attention_matches_multihead_attention(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    qkv = QKVAttention.from_mha(mha).eval()
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    causal = torch.full((7, 7), float("-inf")).triu(1)
    bool_mask = torch.rand(7, 7) > 0.7
    bool_mask.fill_diagonal_(False)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, -2:] = True
    for kwargs in ({}, {"attn_mask": causal}, {"attn_mask": bool_mask}, {"key_padding_mask": padding}):
        ref = mha(x, x, x, need_weights=False, **kwargs)[0]
        out = qkv(x, x, x, need_weights=False, **kwargs)[0]
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_adapted_attention_equals_hand_built_reference():
    """One adapted layer == nn.MultiheadAttention with in_proj W + [B_q A_q; B_k A_k; B_v A_v] * alpha / r."""
    torch.manual_seed(0)
    from peft import get_peft_model

    r, alpha, d = 4, 2.0, 32
    mha = nn.MultiheadAttention(d, 4, batch_first=True).eval()
    holder = nn.Module()
    holder.block = nn.Module()
    holder.block.attn = mha
    reference = nn.MultiheadAttention(d, 4, batch_first=True).eval()
    reference.load_state_dict(mha.state_dict())
    split_attention(holder)
    cfg = make_lora_config(r=r, alpha=alpha)
    cfg.target_modules = r".*attn\.(q_proj|k_proj|v_proj)"
    model = get_peft_model(holder, cfg, adapter_name="global")
    _random_lora(model)
    attn = model.base_model.model.block.attn
    deltas = [
        getattr(attn, f"{p}_proj").lora_B["global"].weight @ getattr(attn, f"{p}_proj").lora_A["global"].weight
        for p in "qkv"
    ]
    with torch.no_grad():
        reference.in_proj_weight.add_(torch.cat(deltas) * (alpha / r))
    x = torch.randn(2, 5, d)
    torch.testing.assert_close(attn(x, x, x)[0], reference(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)
    # The out-projection is not adapted (the paper adapts q, k, v only).
    assert not hasattr(attn.out_proj, "lora_A")


@pytest.mark.parametrize("r,towers", [(8, ("vision", "text")), (4, ("vision", "text")), (2, ("vision",)), (8, ("text",))])
def test_trainable_parameter_count_is_6_r_width_per_attention_layer(r, towers):
    cfg = get_arch_config("tclip-tiny")
    model = tclip.TCLIP.from_base("tclip-tiny", lora={"r": r, "towers": list(towers)})
    vw, vl = cfg["vision_cfg"]["width"], cfg["vision_cfg"]["layers"]
    tw, tl = cfg["text_cfg"]["width"], cfg["text_cfg"]["layers"]
    expected = {
        "vision": 6 * r * vw * vl if "vision" in towers else 0,
        "text": 6 * r * tw * tl if "text" in towers else 0,
    }
    counts = lora_parameter_count(model.clip, "global")
    assert counts["vision"] == expected["vision"] and counts["text"] == expected["text"]
    trainable = model.train_adapter("global")
    assert sum(p.numel() for p in trainable) == expected["vision"] + expected["text"]


def test_vit_b16_adapter_has_the_papers_parameter_count():
    """The paper: 737,280 trainable parameters per adapter on ViT-B/16 (442,368 vision + 294,912 text)."""
    from peft import get_peft_model

    with torch.device("meta"):  # architecture only: no 150M-parameter allocation
        base = _instantiate(get_arch_config("ViT-B-16"))
        split_attention(base)
        model = get_peft_model(base, make_lora_config(), adapter_name="global")
    assert lora_parameter_count(model, "global") == {"vision": 442368, "text": 294912, "total": 737280}


def test_mlp_targets_are_optional_and_add_mlp_parameters():
    with_mlp = lora_parameter_count(tclip.TCLIP.from_base("tclip-tiny", lora={"mlp": True}).clip, "global")
    without = lora_parameter_count(tclip.TCLIP.from_base("tclip-tiny").clip, "global")
    cfg = get_arch_config("tclip-tiny")
    # c_fc: d -> 4d and c_proj: 4d -> d, each r * (in + out): 2 * r * 5d per block.
    extra = sum(2 * 8 * 5 * cfg[t]["width"] * cfg[t]["layers"] for t in ("vision_cfg", "text_cfg"))
    assert with_mlp["total"] - without["total"] == extra


def test_fused_state_dict_loads_into_plain_open_clip():
    torch.manual_seed(0)
    plain = _instantiate(get_arch_config("tclip-tiny")).eval()
    split = _instantiate(get_arch_config("tclip-tiny")).eval()
    split.load_state_dict(plain.state_dict())
    split_attention(split)
    restored = _instantiate(get_arch_config("tclip-tiny")).eval()
    restored.load_state_dict(fuse_attention_state_dict(split.state_dict()), strict=True)
    img = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(restored.encode_image(img), plain.encode_image(img))
    torch.testing.assert_close(split.encode_image(img), plain.encode_image(img), atol=1e-5, rtol=1e-5)


def test_merged_state_dict_reproduces_the_adapted_model():
    torch.manual_seed(0)
    model = tclip.TCLIP.from_base("tclip-tiny").eval()
    _random_lora(model.clip)
    merged = _instantiate(get_arch_config("tclip-tiny")).eval()
    merged.load_state_dict(merged_base_state_dict(model.clip, "fine"), strict=True)
    img = torch.rand(2, 1, 64, 64)
    tokens = model.tokenize(["a warm car", "cold sky"])
    with torch.no_grad():
        torch.testing.assert_close(
            torch.nn.functional.normalize(merged.encode_image(model.preprocess(img)), dim=-1),
            model.encode_image(img, variant="fine"),
            atol=1e-5,
            rtol=1e-4,
        )
        torch.testing.assert_close(
            torch.nn.functional.normalize(merged.encode_text(tokens), dim=-1),
            model.encode_text(tokens, variant="fine"),
            atol=1e-5,
            rtol=1e-4,
        )


def test_saved_adapter_loads_with_peft_directly(tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = tclip.TCLIP.from_base("tclip-tiny").eval()
    _random_lora(model.clip)
    model.save(tmp_path)
    base = _instantiate(get_arch_config("tclip-tiny")).eval()
    base.load_state_dict(load_file(tmp_path / "base.safetensors"))
    split_attention(base)
    peft_model = PeftModel.from_pretrained(base, tmp_path / "adapters" / "global", adapter_name="global").eval()
    img = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        direct = torch.nn.functional.normalize(peft_model.get_base_model().encode_image(model.preprocess(img)), dim=-1)
        torch.testing.assert_close(direct, model.encode_image(img, variant="global"))


# ---------------------------------------------------------------------------------------------- ResNet towers
def test_linear_attention_pool_matches_open_clip_attention_pool():
    from open_clip.modified_resnet import AttentionPool2d

    from tclip.lora import LinearAttentionPool2d

    torch.manual_seed(0)
    pool = AttentionPool2d(3, 32, 4, 24).eval()
    with torch.no_grad():
        for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
            proj.bias.normal_()
    fast = LinearAttentionPool2d.from_pool(pool).eval()
    assert fast.state_dict().keys() == pool.state_dict().keys()
    x = torch.randn(5, 32, 3, 3)
    torch.testing.assert_close(fast(x), pool(x), atol=1e-5, rtol=1e-5)


def test_resnet_attention_pool_is_adapted_and_equals_hand_built_reference():
    """RN towers: LoRA on attnpool q/k/v really changes the output, exactly as W + B A * alpha / r."""
    from open_clip.modified_resnet import AttentionPool2d
    from peft import get_peft_model

    torch.manual_seed(0)
    r, alpha, d = 4, 2.0, 32
    holder = nn.Module()
    holder.visual = nn.Module()
    holder.visual.attnpool = AttentionPool2d(3, d, 4, 24).eval()
    reference = AttentionPool2d(3, d, 4, 24).eval()
    reference.load_state_dict(holder.visual.attnpool.state_dict())
    assert split_attention(holder) == 1
    model = get_peft_model(holder, make_lora_config(r=r, alpha=alpha, towers=("vision",)), adapter_name="pool")
    _random_lora(model)
    pool = model.base_model.model.visual.attnpool
    with torch.no_grad():
        for name in ("q_proj", "k_proj", "v_proj"):
            layer = getattr(pool, name)
            delta = layer.lora_B["pool"].weight @ layer.lora_A["pool"].weight * (alpha / r)
            getattr(reference, name).weight.add_(delta)
    x = torch.randn(5, d, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(pool(x), reference(x), atol=1e-5, rtol=1e-5)
        with model.disable_adapter():
            assert not torch.allclose(pool(x), reference(x), atol=1e-3)  # the adapter does something


def test_resnet_base_adapters_cover_both_towers_and_round_trip(tmp_path):
    cfg = get_arch_config("tclip-tiny-rn")
    model = tclip.TCLIP.from_base("tclip-tiny-rn").eval()
    counts = lora_parameter_count(model.clip, "global")
    pool_width = cfg["vision_cfg"]["width"] * 32  # ModifiedResNet's last stage width
    assert counts["vision"] == 6 * 8 * pool_width  # the one attention layer of a ResNet tower
    assert counts["text"] == 6 * 8 * cfg["text_cfg"]["width"] * cfg["text_cfg"]["layers"]
    _random_lora(model.clip)
    model.save(tmp_path)
    again = tclip.load(tmp_path).eval()
    img = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        for variant in ("base", "global", "fine"):
            torch.testing.assert_close(again.encode_image(img, variant=variant), model.encode_image(img, variant=variant))
        assert not torch.allclose(model.encode_image(img, variant="global"), model.encode_image(img, variant="base"))


def test_conv_targets_adapt_every_resnet_convolution_and_merge_round_trip(tmp_path):
    """`lora.convs`: peft's Conv2d LoRA on every convolution of a ResNet image tower, on top of q/k/v."""
    plain = tclip.TCLIP.from_base("tclip-tiny-rn").eval()
    model = tclip.TCLIP.from_base("tclip-tiny-rn", lora={"convs": True}).eval()
    convs = [(n, m) for n, m in plain.clip.get_base_model().visual.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) > 10
    r = 8  # each conv: A (r, in, k, k) and B (out, r, 1, 1)
    extra = sum(r * m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels * r for _, m in convs)
    got, base_counts = lora_parameter_count(model.clip, "global"), lora_parameter_count(plain.clip, "global")
    assert got["vision"] - base_counts["vision"] == extra and got["text"] == base_counts["text"]
    _random_lora(model.clip)
    img = torch.rand(2, 1, 64, 64)
    merged = _instantiate(get_arch_config("tclip-tiny-rn")).eval()
    merged.load_state_dict(merged_base_state_dict(model.clip, "global"), strict=True)
    model.save(tmp_path)
    again = tclip.load(tmp_path).eval()
    with torch.no_grad():
        adapted = model.encode_image(img, variant="global")
        torch.testing.assert_close(torch.nn.functional.normalize(merged.encode_image(model.preprocess(img)), dim=-1),
                                   adapted, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(again.encode_image(img, variant="global"), adapted)
        assert not torch.allclose(adapted, model.encode_image(img, variant="base"), atol=1e-3)
    assert again.lora["convs"] is True
    with pytest.raises(ValueError, match="no 'vision'"):
        tclip.TCLIP.from_base("tclip-tiny-rn", lora={"convs": True, "towers": ["text"]})


def test_the_conv_key_at_its_default_leaves_run_hashes_and_stamps_as_before():
    """Runs made before `lora.convs` existed stay complete: the key at its default is not part of what identifies
    a run (the recipe's T-CLIP stage hash, sim2real's config stamp, tclip.train --resume's config check)."""
    from tclip.train import load_train_config, result_settings

    cfg = load_train_config("sim2real-adapters")
    assert cfg["lora"]["convs"] is False
    before = result_settings(cfg)
    assert "convs" not in before["lora"] and "image_workers" not in before
    old = {**cfg, "lora": {k: v for k, v in cfg["lora"].items() if k != "convs"}}  # as saved before the key
    assert result_settings(old) == before
    assert result_settings(load_train_config("sim2real-adapters-convs"))["lora"]["convs"] is True
    # the two places that identify runs by these settings
    from thermgen.bench.sim2real import _config_digest
    from thermgen.train.config import load_config
    from thermgen.train.recipe import _tclip_stage_config

    assert _config_digest("sim2real-adapters") != _config_digest("sim2real-adapters-convs")
    stage = _tclip_stage_config(load_config(None, []))[1]
    assert "convs" not in stage["lora"] and stage["lora"]["r"] >= 1
    assert _tclip_stage_config(load_config(None, ["tclip.train={lora: {convs: true}}"]))[1]["lora"]["convs"] is True
