"""Build a ThermalDiffusionPipeline from a local Stable Diffusion 1.x / 2.x / SDXL folder.

The paper's generation set-up (SDXL with its text encoder swapped for T-CLIP) made concrete and measurable:
keep the folder's UNet, VAE and scheduler, replace its text encoder(s) and tokenizer(s) by T-CLIP's text
tower (``TCLIPTextEncoder``), and bridge the widths:

* If the UNet's ``cross_attention_dim`` (768 for SD 1.x, 1024 for SD 2.x, 2048 for SDXL) differs from T-CLIP's
  token width (512 for ViT-B/16), the UNet gets diffusers' ``encoder_hid_dim_type="text_proj"``: a learned
  linear map from the T-CLIP width to ``cross_attention_dim`` in front of every cross-attention. It starts random,
  so the imported pipeline needs UNet fine-tuning (``python -m thermgen.train`` with the SD config) before its
  samples mean anything.
* SDXL's extra conditioning (``addition_embed_type="text_time"``: pooled text embedding of CLIP-G plus size/crop
  ids) has no T-CLIP counterpart; it is removed (the ``add_embedding`` weights are dropped, and the report says so).
* The VAE stays 3-channel (``vae_channels=3``: the pipeline replicates thermal on encode, averages on decode)
  or is converted to an exactly equivalent 1-channel VAE (``vae_channels=1``; see
  :func:`thermgen.train.vae.vae_to_single_channel`).

Only diffusers-format folders (``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``) are read; nothing
downloads. Command: ``python -m thermgen.train.sd_import --sd DIR --tclip DIR --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.utils import logging

from pipelines import ThermalDiffusionPipeline
from thermgen.data.sample import DataError

logger = logging.get_logger(__name__)

_DROPPABLE_ADDITIONS = ("text_time", "text", "text_image")


def adapt_unet_to_text_width(unet: UNet2DConditionModel, hidden_size: int, pooled_dim: int | None = None
                             ) -> tuple[UNet2DConditionModel, dict[str, Any]]:
    """Make a pretrained UNet accept T-CLIP token states of width ``hidden_size``.

    A UNet that thermgen trained itself passes unchanged: its ``text_proj`` already takes ``hidden_size``-wide
    tokens, its ``addition_embed_type="text"`` pools those same tokens (kept), and its pooled-prompt
    ``class_embed_type="projection"`` is accepted when ``pooled_dim`` (T-CLIP's pooled width) matches it.

    Returns ``(unet, changes)``: the same UNet when nothing needs changing, else a new one built from the modified
    config with every pretrained weight copied (strictly: only the new projection may be missing and only the
    dropped SDXL added-conditioning weights may be left over). ``changes`` records what was done
    (``{"text_proj": (in, out)}``, ``{"dropped_addition_embed_type": "text_time"}``), for the import report.

    Raises ``ValueError`` for UNets this pipeline cannot drive (class-conditioned, image-projection hidden states,
    per-block cross-attention widths that differ).
    """
    config = dict(unet.config)
    changes: dict[str, Any] = {}
    if config.get("class_embed_type") == "projection" and pooled_dim is not None:
        if config.get("projection_class_embeddings_input_dim") != pooled_dim:
            raise ValueError(f"UNet class_embed_type='projection' takes {config.get('projection_class_embeddings_input_dim')}"
                             f"-wide pooled embeddings but the text encoder's pooled embedding is {pooled_dim} wide")
    elif config.get("class_embed_type") == "projection":
        raise ValueError("this UNet takes a pooled prompt embedding (class_embed_type='projection', as thermgen's "
                         "unet.pooled_conditioning trains it): set unet.pooled_conditioning=true to use it")
    elif config.get("class_embed_type") is not None:
        raise ValueError(f"UNet class_embed_type={config['class_embed_type']!r} needs class labels; not supported")
    if config.get("encoder_hid_dim_type") not in (None, "text_proj"):
        raise ValueError(f"UNet encoder_hid_dim_type={config['encoder_hid_dim_type']!r} is not supported (text_proj only)")
    cross = config["cross_attention_dim"]
    if isinstance(cross, (list, tuple)):
        if len(set(cross)) != 1:
            raise ValueError(f"UNet cross_attention_dim differs per block {list(cross)}; not supported")
        cross = cross[0]
    current_in = config["encoder_hid_dim"] if config.get("encoder_hid_dim_type") == "text_proj" else cross
    # addition_embed_type "text" pools the raw token states: it still fits when their width does not change
    keeps_text_addition = config.get("addition_embed_type") == "text" and current_in == hidden_size
    if config.get("addition_embed_type") is not None and not keeps_text_addition:
        if config["addition_embed_type"] not in _DROPPABLE_ADDITIONS:
            raise ValueError(f"UNet addition_embed_type={config['addition_embed_type']!r} is not supported")
        changes["dropped_addition_embed_type"] = config["addition_embed_type"]
        config.update(addition_embed_type=None, addition_time_embed_dim=None)
        if config.get("class_embed_type") is None:
            config.update(projection_class_embeddings_input_dim=None)
    if current_in != hidden_size:
        config.update(encoder_hid_dim=int(hidden_size), encoder_hid_dim_type="text_proj")
        changes["text_proj"] = (int(hidden_size), int(cross))
    if not changes:
        return unet, changes

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    new = UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    if "text_proj" in changes:  # a different-width projection already there is replaced, not loaded
        state = {k: v for k, v in state.items() if not k.startswith("encoder_hid_proj.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if not k.startswith("encoder_hid_proj.")]
    bad_unexpected = [k for k in unexpected if not k.startswith("add_embedding.")]
    if bad_missing or bad_unexpected:
        raise RuntimeError(f"UNet adaptation lost weights: missing {bad_missing[:5]}, unexpected {bad_unexpected[:5]}")
    if unexpected:
        changes["dropped_weights"] = len(unexpected)
    if "text_proj" in changes:
        _init_projection(new.encoder_hid_proj, seed=0)
    return new.to(device=unet.device, dtype=unet.dtype), changes


def _init_projection(layer: torch.nn.Linear, seed: int) -> None:
    """nn.Linear's default initialisation from a fixed seed, so importing the same folder twice gives the same
    pipeline (the projection is the only new weight)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=g)
        bound = 1.0 / math.sqrt(layer.in_features)
        torch.nn.init.uniform_(layer.bias, -bound, bound, generator=g)


def _check_sd_folder(sd_dir: Path) -> dict[str, Any]:
    if sd_dir.is_file():
        raise DataError(
            f"{sd_dir}: single-file checkpoints are not supported; convert it to a diffusers folder first "
            "(e.g. StableDiffusionPipeline.from_single_file(path).save_pretrained(dir) on a machine with the configs)"
        )
    index_path = sd_dir / "model_index.json"
    if not index_path.is_file():
        raise DataError(f"{sd_dir}: not a diffusers pipeline folder (no model_index.json)")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{index_path}: invalid JSON ({err})") from None
    for name in ("unet", "vae", "scheduler"):
        if name not in index:
            raise DataError(f"{index_path}: no '{name}' component (is this a Stable Diffusion folder?)")
        if not (sd_dir / name).is_dir():
            raise DataError(f"{sd_dir / name}: component folder missing")
    if index["unet"][1] != "UNet2DConditionModel":
        raise DataError(f"{index_path}: unet is {index['unet'][1]!r}; only UNet2DConditionModel (SD 1.x/2.x/SDXL) is supported")
    return index


def build_pipeline_from_sd(
    sd_dir: str | Path,
    text_encoder,
    *,
    mode: str | None = None,
    vae_channels: int = 3,
    scheduler: str | None = None,
) -> tuple[ThermalDiffusionPipeline, dict[str, Any]]:
    """A ThermalDiffusionPipeline from a local Stable Diffusion folder and a T-CLIP text encoder.

    Args:
        sd_dir: diffusers-format SD 1.x / 2.x / SDXL folder (``model_index.json``, ``unet/``, ``vae/``,
            ``scheduler/``); its text encoders and tokenizers are ignored.
        text_encoder: a ``tclip.text_encoder.TCLIPTextEncoder``, or a T-CLIP folder (``tclip.load`` format) to build
            one from with ``TCLIPTextEncoder.from_tclip(folder, mode=mode)``.
        mode: TCLIPTextEncoder mode when ``text_encoder`` is a folder ("base", "global", "fine", "fused",
            "concat"; default: from_tclip's default).
        vae_channels: 3 keeps the SD VAE (replicate / average); 1 converts it to a 1-channel VAE (same function).
        scheduler: a scheduler name for :func:`thermgen.generate.make_scheduler` (e.g. "ddim"), built from the
            folder's scheduler config; default the folder's own scheduler class.

    Returns:
        ``(pipeline, report)``; report: ``{"source", "unet_parameters", "cross_attention_dim", "text_hidden_size",
        "changes", "vae_channels", "scheduler"}``.
    """
    sd_dir = Path(sd_dir)
    _check_sd_folder(sd_dir)
    if vae_channels not in (1, 3):
        raise ValueError(f"vae_channels must be 1 or 3, got {vae_channels!r}")
    if isinstance(text_encoder, (str, Path)):
        from tclip.text_encoder import TCLIPTextEncoder

        kwargs = {} if mode is None else {"mode": mode}
        text_encoder = TCLIPTextEncoder.from_tclip(Path(text_encoder), **kwargs)
    elif mode is not None and getattr(text_encoder.config, "mode", mode) != mode:
        raise ValueError(f"mode={mode!r} given but the text encoder's mode is {text_encoder.config.mode!r}")
    hidden = int(text_encoder.hidden_size)

    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet")
    cross = unet.config.cross_attention_dim
    unet, changes = adapt_unet_to_text_width(unet, hidden)
    if "dropped_addition_embed_type" in changes:
        logger.warning(
            f"{sd_dir}: dropped the UNet's addition_embed_type={changes['dropped_addition_embed_type']!r} "
            "(SDXL pooled-text + size conditioning has no T-CLIP counterpart); fine-tune the UNet."
        )
    if "text_proj" in changes:
        logger.warning(
            f"{sd_dir}: added a randomly initialised text projection {changes['text_proj'][0]} -> "
            f"{changes['text_proj'][1]} (T-CLIP width -> cross_attention_dim); fine-tune the UNet before sampling."
        )

    from thermgen.train.vae import load_pretrained_vae, vae_to_single_channel

    vae = load_pretrained_vae(sd_dir)
    if vae_channels == 1:
        vae = vae_to_single_channel(vae)
    if vae.config.latent_channels != unet.config.in_channels:
        raise DataError(
            f"{sd_dir}: vae latent_channels={vae.config.latent_channels} but unet in_channels={unet.config.in_channels}"
        )

    from thermgen.schedulers import load_scheduler, make_scheduler

    sched = load_scheduler(sd_dir / "scheduler")
    if scheduler is not None:
        sched = make_scheduler(scheduler, sched.config)

    pipe = ThermalDiffusionPipeline(vae=vae, text_encoder=text_encoder, unet=unet, scheduler=sched)
    report = {
        "source": str(sd_dir),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "cross_attention_dim": cross if isinstance(cross, int) else list(cross),
        "text_hidden_size": hidden,
        "text_encoder_mode": getattr(text_encoder.config, "mode", None),
        "changes": {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()},
        "vae_channels": int(vae.config.in_channels),
        "scheduler": type(sched).__name__,
    }
    return pipe, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m thermgen.train.sd_import",
        description="Build a ThermalDiffusionPipeline folder from a local diffusers-format Stable Diffusion "
        "1.x/2.x/SDXL folder: keep its UNet, VAE and scheduler, replace its text encoder by T-CLIP's text tower, "
        "bridge the width with a text projection. The result needs UNet fine-tuning before sampling.",
    )
    parser.add_argument("--sd", type=Path, required=True, help="Stable Diffusion folder (model_index.json, unet/, vae/, scheduler/)")
    parser.add_argument("--tclip", type=Path, required=True, help="T-CLIP folder (written by python -m tclip.train)")
    parser.add_argument("--mode", default=None, choices=["base", "global", "fine", "fused", "concat"],
                        help="how T-CLIP's adapters condition the UNet (default: TCLIPTextEncoder.from_tclip's default)")
    parser.add_argument("--vae-channels", type=int, default=3, choices=[1, 3],
                        help="3: keep the SD VAE and replicate thermal; 1: convert it to 1 channel (default 3)")
    parser.add_argument("--scheduler", default=None,
                        help="replace the folder's scheduler (e.g. ddim, euler, dpm++; default: keep the folder's)")
    parser.add_argument("--out", type=Path, required=True, help="output pipeline folder")
    args = parser.parse_args(argv)
    try:
        pipe, report = build_pipeline_from_sd(
            args.sd, args.tclip, mode=args.mode, vae_channels=args.vae_channels, scheduler=args.scheduler
        )
    except (ValueError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pipe.save_pretrained(args.out, safe_serialization=True)
    (Path(args.out) / "sd_import_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"pipeline written to {args.out}: {json.dumps(report['changes'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
