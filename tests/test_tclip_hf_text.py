"""A Hugging Face text tower (as with the offline MiniLM option) under T-CLIP: LoRA on query/key/value."""

import json

import pytest
import torch

import tclip
from tclip.lora import lora_parameter_count

transformers = pytest.importorskip("transformers")

WORDS = ["an", "infrared", "thermal", "image", "of", "a", "warm", "car", "cold", "road", "night", "day"]


@pytest.fixture(scope="module")
def hf_arch(tmp_path_factory):
    """A tiny BERT saved locally (weights + WordPiece tokenizer) and an open_clip config that uses it."""
    root = tmp_path_factory.mktemp("tinybert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=80)
    transformers.BertModel(config).save_pretrained(root)
    arch = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"hf_model_name": str(root), "hf_tokenizer_name": str(root), "hf_proj_type": "mlp",
                     "hf_pooler_type": "mean_pooler", "context_length": 16},
    }
    path = root / "tiny-hf.json"
    path.write_text(json.dumps(arch))
    return path


def test_lora_on_a_hf_text_tower_counts_6_r_width_per_layer(hf_arch):
    model = tclip.TCLIP.from_base(str(hf_arch))
    counts = lora_parameter_count(model.clip, "fine")
    assert counts["text"] == 6 * 8 * 32 * 2 and counts["vision"] == 6 * 8 * 32 * 1


def test_hf_text_tower_model_saves_loads_and_encodes_identically(hf_arch, tmp_path):
    torch.manual_seed(0)
    model = tclip.TCLIP.from_base(str(hf_arch)).eval()
    with torch.no_grad():
        for name, p in model.clip.named_parameters():
            if "lora_B" in name:
                p.normal_()
    caps = ["an infrared thermal image of a warm car", "a cold road at night"]
    with torch.no_grad():
        before = model.encode_text(caps, caps, variant="dual")
        assert before.shape == (2, 32)
        model.save(tmp_path / "m")
        after = tclip.load(tmp_path / "m").encode_text(caps, caps, variant="dual")
    torch.testing.assert_close(after, before)
