"""Building a ThermalDiffusionPipeline from a local Stable Diffusion 1.x/2.x/SDXL folder (tiny ones saved here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

from pipelines import ThermalDiffusionPipeline
from pipelines.testing import TINY_TEXT_CFG
from tclip.text_encoder import TCLIPTextEncoder
from thermgen.data.sample import DataError
from thermgen.train.sd_import import build_pipeline_from_sd, main

UNET_BLOCKS = dict(
    block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
)


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=8, sample_size=16,
    )


def save_sd15(path, cross_attention_dim=64):
    """A tiny SD-1.x-shaped folder: CLIP text encoder, UNet cross-attending at `cross_attention_dim`, RGB VAE, PNDM.
    (No tokenizer: CLIPTokenizer needs vocabulary files from the hub; the importer ignores it anyway.)"""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_BLOCKS, cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=cross_attention_dim, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=1, vocab_size=1000, bos_token_id=0, eos_token_id=2, pad_token_id=1))
    StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=text, tokenizer=None, unet=unet,
        scheduler=PNDMScheduler(skip_prk_steps=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(path)
    return path


def save_sdxl(path):
    """A tiny SDXL-shaped folder: UNet with the pooled-text + size ("text_time") added conditioning (diffusers'
    own SDXL test sizes)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        **UNET_BLOCKS, attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1,
    )
    StableDiffusionXLPipeline(
        vae=tiny_vae(), text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
        scheduler=EulerDiscreteScheduler(),
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def text_encoder():
    torch.manual_seed(0)
    return TCLIPTextEncoder(embed_dim=32, text_cfg=dict(TINY_TEXT_CFG), mode="concat").eval()


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    return save_sd15(tmp_path_factory.mktemp("sd15"))


def generate(pipe, seed=0):
    pipe.set_progress_bar_config(disable=True)
    return pipe("An infrared thermal image of a road at night", num_inference_steps=2, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


def test_width_mismatch_is_bridged_with_a_text_projection(sd15, text_encoder):
    pipe, report = build_pipeline_from_sd(sd15, text_encoder)
    assert pipe.unet.config.encoder_hid_dim_type == "text_proj"
    assert pipe.unet.config.encoder_hid_dim == text_encoder.hidden_size == 32
    assert report["changes"] == {"text_proj": [32, 64]}


def test_pretrained_unet_and_vae_weights_are_kept(sd15, text_encoder):
    pipe, _ = build_pipeline_from_sd(sd15, text_encoder)
    original = UNet2DConditionModel.from_pretrained(sd15, subfolder="unet").state_dict()
    imported = pipe.unet.state_dict()
    assert set(imported) - set(original) == {"encoder_hid_proj.weight", "encoder_hid_proj.bias"}
    assert all(torch.equal(imported[k], v) for k, v in original.items())
    vae = AutoencoderKL.from_pretrained(sd15, subfolder="vae").state_dict()
    assert all(torch.equal(pipe.vae.state_dict()[k], v) for k, v in vae.items())


def test_imported_pipeline_generates_thermal_and_round_trips(sd15, text_encoder, tmp_path):
    pipe, _ = build_pipeline_from_sd(sd15, text_encoder)
    assert isinstance(pipe.scheduler, PNDMScheduler)  # the folder's own sampler by default
    images = generate(pipe)
    assert images.shape == (1, 16, 16, 1)
    pipe.save_pretrained(tmp_path / "thermal")
    np.testing.assert_array_equal(generate(ThermalDiffusionPipeline.from_pretrained(tmp_path / "thermal")), images)


def test_sdxl_added_conditioning_is_dropped(tmp_path, text_encoder):
    pipe, report = build_pipeline_from_sd(save_sdxl(tmp_path / "sdxl"), text_encoder)
    assert pipe.unet.config.addition_embed_type is None
    assert report["changes"]["dropped_addition_embed_type"] == "text_time" and report["changes"]["dropped_weights"] > 0
    assert generate(pipe).shape == (1, 16, 16, 1)


def test_import_is_reproducible(sd15, text_encoder):
    np.testing.assert_array_equal(generate(build_pipeline_from_sd(sd15, text_encoder)[0]),
                                  generate(build_pipeline_from_sd(sd15, text_encoder)[0]))


def test_matching_width_leaves_the_unet_unchanged(tmp_path, text_encoder):
    pipe, report = build_pipeline_from_sd(save_sd15(tmp_path / "sd", cross_attention_dim=32), text_encoder)
    assert report["changes"] == {} and pipe.unet.config.encoder_hid_dim_type is None


def test_vae_can_be_converted_to_one_channel(sd15, text_encoder):
    three, _ = build_pipeline_from_sd(sd15, text_encoder, vae_channels=3)
    one, report = build_pipeline_from_sd(sd15, text_encoder, vae_channels=1)
    assert one.vae.config.in_channels == 1 and report["vae_channels"] == 1
    np.testing.assert_allclose(generate(one), generate(three), atol=1e-5)  # exact conversion: same images


def test_scheduler_can_be_replaced_keeping_the_noise_schedule(sd15, text_encoder):
    pipe, report = build_pipeline_from_sd(sd15, text_encoder, scheduler="ddim")
    assert isinstance(pipe.scheduler, DDIMScheduler) and report["scheduler"] == "DDIMScheduler"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear" and pipe.scheduler.config.beta_end == 0.012


def test_tclip_folder_builds_the_text_encoder(sd15, tmp_path):
    from tclip import TCLIP

    TCLIP.from_base("tclip-tiny").save(tmp_path / "tclip")
    pipe, report = build_pipeline_from_sd(sd15, tmp_path / "tclip", mode="global")
    assert isinstance(pipe.text_encoder, TCLIPTextEncoder) and pipe.text_encoder.config.mode == "global"
    assert report["text_hidden_size"] == 64 and report["changes"] == {}  # tclip-tiny is 64 wide, like the UNet


def test_folder_without_model_index_is_an_error_naming_it(tmp_path, text_encoder):
    with pytest.raises(DataError, match=f"{tmp_path}.*model_index.json"):
        build_pipeline_from_sd(tmp_path, text_encoder)


def test_folder_missing_its_unet_is_an_error_naming_it(sd15, tmp_path, text_encoder):
    (tmp_path / "model_index.json").write_text((sd15 / "model_index.json").read_text())
    with pytest.raises(DataError, match="unet"):
        build_pipeline_from_sd(tmp_path, text_encoder)


def test_command_writes_a_pipeline_folder(sd15, tmp_path):
    from tclip import TCLIP

    TCLIP.from_base("tclip-tiny").save(tmp_path / "tclip")
    out = tmp_path / "pipe"
    assert main(["--sd", str(sd15), "--tclip", str(tmp_path / "tclip"), "--mode", "fused", "--out", str(out)]) == 0
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "ThermalDiffusionPipeline"
    assert json.loads((out / "sd_import_report.json").read_text())["text_encoder_mode"] == "fused"


def test_a_thermgen_unet_with_pooled_conditioning_is_kept_whole():
    """A UNet thermgen trained (text_proj from T-CLIP's width, attention-pooled "text" addition, pooled-prompt
    projection class embedding) can be fine-tuned again through unet.pretrained: nothing is dropped or re-initialised."""
    from thermgen.train.sd_import import adapt_unet_to_text_width
    from thermgen.train.unet import build_unet

    cfg = dict(pooled_conditioning=True, block_out_channels=[32, 64], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
               up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1, attention_head_dim=8,
               transformer_layers_per_block=1, cross_attention_dim=32, norm_num_groups=8, addition_embed_type="text",
               resnet_time_scale_shift="scale_shift")
    unet = build_unet(cfg, latent_channels=16, latent_size=8, text_width=24, pooled_dim=20)
    same, changes = adapt_unet_to_text_width(unet, 24, pooled_dim=20)
    assert same is unet and changes == {}
    with pytest.raises(ValueError, match="20-wide pooled embeddings but the text encoder's pooled embedding is 12"):
        adapt_unet_to_text_width(unet, 24, pooled_dim=12)
    with pytest.raises(ValueError, match="set unet.pooled_conditioning=true"):
        adapt_unet_to_text_width(unet, 24)
    # another token width: a new text projection, and the "text" addition (which pools the raw tokens) goes
    new, changes = adapt_unet_to_text_width(unet, 40, pooled_dim=20)
    assert changes["text_proj"] == (40, 32) and changes["dropped_addition_embed_type"] == "text"
    assert new.config.class_embed_type == "projection" and new.config.projection_class_embeddings_input_dim == 20
