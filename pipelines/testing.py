"""Tiny, randomly initialised ThermalDiffusionPipeline components for tests, docs and smoke runs.

Like diffusers' ``get_dummy_components()``: a real TCLIPTextEncoder, UNet2DConditionModel, AutoencoderKL and
scheduler, small enough that a denoising step takes milliseconds on a CPU. Nothing downloads. The samples are
noise-like (nothing is trained); use them to test machinery, never quality.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from .pipeline_thermal_diffusion import ThermalDiffusionPipeline

TINY_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def tiny_components(
    mode: str = "concat",
    cross_attention_dim: int = 48,
    vae_channels: int = 1,
    seed: int = 0,
    pooled: bool = False,
) -> dict:
    """Components of a tiny pipeline: 16x16 px images, 8x8x4 latents.

    mode: TCLIPTextEncoder mode ("base", "global", "fine", "fused", "concat").
    cross_attention_dim: the UNet's; when it differs from the text width (32) the UNet bridges it with
        ``encoder_hid_dim_type="text_proj"``, as pipelines built on pretrained UNets do.
    vae_channels: 1 (thermal VAE) or 3 (an SD-style VAE; thermal replicated on encode, averaged on decode).
    pooled: the UNet also takes T-CLIP's pooled prompt embedding (``class_embed_type="projection"``).
    """
    from tclip.text_encoder import TCLIPTextEncoder

    torch.manual_seed(seed)
    text_encoder = TCLIPTextEncoder(embed_dim=32, text_cfg=dict(TINY_TEXT_CFG), mode=mode).eval()
    hidden = text_encoder.hidden_size
    bridge = {} if cross_attention_dim == hidden else {"encoder_hid_dim": hidden, "encoder_hid_dim_type": "text_proj"}
    if pooled:
        bridge.update(class_embed_type="projection", projection_class_embeddings_input_dim=text_encoder.pooled_size)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
        **bridge,
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=vae_channels,
        out_channels=vae_channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    return {"vae": vae, "text_encoder": text_encoder, "unet": unet, "scheduler": scheduler}


def tiny_pipeline(**kwargs) -> ThermalDiffusionPipeline:
    """A tiny ThermalDiffusionPipeline (see :func:`tiny_components`), progress bars off."""
    pipe = ThermalDiffusionPipeline(**tiny_components(**kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe
