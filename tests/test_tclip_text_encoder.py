"""TCLIPTextEncoder: the diffusers component that turns prompts into adapted per-token states."""

import pytest
import torch

import tclip
from tclip.text_encoder import MODES, TCLIPTextEncoder

PROMPTS = ["An infrared thermal image of two cars on a road at night.", "A warm person on cold grass."]
FINE = ["Thermal infrared image: engine blocks hot.", "Thermal infrared image: body heat against grass."]


@pytest.fixture(scope="module")
def model(tiny_tclip):
    return tiny_tclip


def _states(model, prompts, adapter):
    with torch.no_grad():
        return model.text_token_states(model.tokenize(prompts), adapter)


@pytest.mark.parametrize("mode,adapter", [("base", None), ("global", "global"), ("fine", "fine")])
def test_single_tower_modes_equal_the_adapted_text_tower(model, mode, adapter):
    enc = TCLIPTextEncoder.from_tclip(model, mode=mode)
    out = enc.encode_prompt(PROMPTS)
    assert out.shape == (2, 77, enc.hidden_size) and enc.hidden_size == 64
    torch.testing.assert_close(out, _states(model, PROMPTS, adapter), atol=2e-5, rtol=1e-4)


def test_fused_mode_mixes_global_and_fine_tokens_with_alpha(model):
    enc = TCLIPTextEncoder.from_tclip(model, mode="fused", alpha=0.7)
    expected = 0.7 * _states(model, PROMPTS, "global") + 0.3 * _states(model, FINE, "fine")
    torch.testing.assert_close(enc.encode_prompt(PROMPTS, FINE), expected, atol=2e-5, rtol=1e-4)


def test_concat_mode_appends_fine_tokens(model):
    enc = TCLIPTextEncoder.from_tclip(model, mode="concat")
    out = enc.encode_prompt(PROMPTS)  # no fine prompt: the same prompt goes through the fine tower
    assert out.shape == (2, 154, 64)
    torch.testing.assert_close(out[:, :77], _states(model, PROMPTS, "global"), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out[:, 77:], _states(model, PROMPTS, "fine"), atol=2e-5, rtol=1e-4)


def test_tokenize_gives_context_length_ids(model):
    enc = TCLIPTextEncoder.from_tclip(model, mode="global")
    ids = enc.tokenize(PROMPTS)
    assert ids.dtype == torch.long and ids.shape == (2, 77)
    assert torch.equal(ids, model.tokenize(PROMPTS))


@pytest.mark.parametrize("mode", MODES)
def test_save_pretrained_round_trip_gives_identical_outputs(model, mode, tmp_path):
    enc = TCLIPTextEncoder.from_tclip(model, mode=mode)
    enc.save_pretrained(tmp_path)
    again = TCLIPTextEncoder.from_pretrained(tmp_path)
    assert again.config.mode == mode
    assert torch.equal(again.encode_prompt(PROMPTS, FINE), enc.encode_prompt(PROMPTS, FINE))


def test_from_tclip_folder_equals_from_model(model, tmp_path):
    model.save(tmp_path / "t")
    a = TCLIPTextEncoder.from_tclip(tmp_path / "t", mode="fused").encode_prompt(PROMPTS)
    b = TCLIPTextEncoder.from_tclip(model, mode="fused").encode_prompt(PROMPTS)
    torch.testing.assert_close(a, b)


def test_registered_in_a_diffusers_pipeline_it_round_trips(model, tmp_path):
    import json

    from diffusers import DiffusionPipeline

    class _OnlyText(DiffusionPipeline):
        def __init__(self, text_encoder):
            super().__init__()
            self.register_modules(text_encoder=text_encoder)

    pipe = _OnlyText(TCLIPTextEncoder.from_tclip(model, mode="fused"))
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["text_encoder"] == ["tclip.text_encoder", "TCLIPTextEncoder"] or index["text_encoder"] == [
        "tclip",
        "TCLIPTextEncoder",
    ]
    loaded = _OnlyText.from_pretrained(tmp_path)
    assert torch.equal(loaded.text_encoder.encode_prompt(PROMPTS), pipe.text_encoder.encode_prompt(PROMPTS))


def test_mode_needing_a_missing_adapter_is_refused():
    m = tclip.TCLIP.from_base("tclip-tiny", adapters=["global"])
    with pytest.raises(ValueError, match="'fine' adapter"):
        TCLIPTextEncoder.from_tclip(m, mode="fused")


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        TCLIPTextEncoder(text_cfg={"width": 32, "heads": 2, "layers": 1}, embed_dim=32, mode="mean")


def test_truncated_text_names_the_words_past_77_tokens(model):
    enc = TCLIPTextEncoder.from_tclip(model, mode="global")
    long = "An infrared thermal image of a road at night. " + "warm car " * 40 + "LAST WORDS HERE"
    short_dropped, long_dropped = enc.truncated_text([PROMPTS[0], long])
    assert short_dropped == ""
    assert long_dropped.endswith("last words here")  # the tokenizer lower-cases
    ids = enc.tokenizer.encode(long)
    assert len(ids) > 75  # 77 minus the start and end tokens
    assert enc.tokenizer.decode(ids[:75]).split() + long_dropped.split() == enc.tokenizer.decode(ids).split()
