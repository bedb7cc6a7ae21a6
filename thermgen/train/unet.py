"""Train the UNet of a thermal latent diffusion model, conditioned on frozen T-CLIP token states.

The loop follows diffusers' ``examples/text_to_image/train_text_to_image_lora.py`` under ``accelerate``
(one code path for a CPU, a GPU, or many processes): full or LoRA fine-tuning (peft ``add_adapter``),
epsilon or v-prediction, optional min-SNR loss weighting, EMA (``diffusers.training_utils.EMAModel``),
gradient accumulation, mixed precision, ``save_state`` checkpoints with rotation and resume, validation
grids with a thermal colour map, CSV (and TensorBoard when installed) logs, a loss-curve PNG, tqdm.

Two things differ from the example, both for small machines and exact reproducibility:

* **Frozen encoders run once.** The VAE and the T-CLIP text tower are frozen, so
  :func:`encode_training_set` encodes every training image (the latent distribution's mean and std) and
  caption (token states) once into a safetensors cache; each step samples a latent from the cached
  distribution. On a CPU this removes most of the step time. The cache is written as it is encoded and read
  a batch at a time (:mod:`thermgen.train.cache`), so neither the encoding nor the training process holds it
  whole: memory does not grow with the training set.
* **Randomness is a function of the step.** The sample order (a permutation per epoch), noise,
  timesteps, latent sampling and caption dropout of micro-step ``k`` come from generators seeded with
  ``(seed, k)`` for the *global* micro-batch of ``train_batch_size`` samples (the global batch, as in every
  thermgen training stage); each of N processes takes its slice of ``train_batch_size / N``. So a run resumed
  from a checkpoint reproduces the uninterrupted run exactly, and 2 processes see the same samples and noise
  as 1 (DDP averages the gradients, so the loss curves agree).

Command (the UNet stage alone, e.g. under ``torchrun --nproc_per_node 2``)::

    python -m thermgen.train.unet --cache RUN/unet/cache.safetensors --out RUN/unet [--config C.yaml] [--resume]
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from thermgen.train.cache import FileTensor, empty_tensor, open_safetensors, write_safetensors
from tclip.scaffold import Checkpointer, csv_tracker, make_trackers, plot_rows, read_csv_log, tracker_config

logger = logging.getLogger(__name__)

CACHE_KEYS = ("latent_mean", "latent_std", "text_states", "uncond_states")
#: Written when the text encoder has a pooled prompt embedding (TCLIPTextEncoder.pooled); read when the UNet
#: takes it (``unet.pooled_conditioning``).
POOLED_KEYS = ("pooled", "uncond_pooled")
# Optional: the text states (and pooled embeddings) of each image's other caption phrasings, (N, V, ...)
VARIANT_KEYS = ("variant_states", "variant_pooled")
# Optional (train.random_flip): the same encodings for the mirrored image's captions (left/right words swapped,
# tclip.data.swap_words), row for row: "mirror_" + each key of text_states/pooled/VARIANT_KEYS.
MIRROR_KEYS = ("mirror_text_states", "mirror_pooled", "mirror_variant_states", "mirror_variant_pooled")


# --------------------------------------------------------------------------------------------------
# Building the UNet
# --------------------------------------------------------------------------------------------------
def build_unet(unet_cfg: dict, *, latent_channels: int, latent_size: int, text_width: int, seed: int = 0,
               pooled_dim: int | None = None):
    """A ``UNet2DConditionModel`` for ``latent_channels`` x ``latent_size``^2 latents and ``text_width``-wide tokens.

    ``unet_cfg`` is the recipe's ``unet`` section. With ``pretrained`` set, loads an SD-format UNet (a
    pipeline folder's ``unet/`` or a UNet folder); otherwise builds one from the sizes (seeded). When the
    text width differs from ``cross_attention_dim``, token states are projected by the UNet's own
    ``encoder_hid_proj`` (``encoder_hid_dim_type="text_proj"``), so the pipeline needs no extra module.
    With ``unet_cfg["pooled_conditioning"]`` the UNet also takes T-CLIP's pooled prompt embedding
    (``pooled_dim`` wide) through diffusers' ``class_embed_type="projection"``: an MLP whose output is added to
    the timestep embedding of every resnet block (as SDXL adds its pooled text embedding).
    """
    pooled = bool(unet_cfg.get("pooled_conditioning"))
    if pooled and not pooled_dim:
        raise ValueError("unet.pooled_conditioning needs the text encoder's pooled embedding width (pooled_dim)")
    from diffusers import UNet2DConditionModel

    if unet_cfg.get("pretrained"):
        path = Path(unet_cfg["pretrained"])
        sub = "unet" if (path / "unet" / "config.json").is_file() else None
        if not (path / (sub or ".") / "config.json").is_file():
            raise FileNotFoundError(f"unet.pretrained: no UNet config.json in {path} or {path / 'unet'}")
        unet = UNet2DConditionModel.from_pretrained(path, subfolder=sub)
        if unet.config.in_channels != latent_channels:
            raise ValueError(f"unet.pretrained: the UNet takes {unet.config.in_channels} latent channels but the "
                             f"VAE gives {latent_channels}")
        from thermgen.train.sd_import import adapt_unet_to_text_width

        torch.manual_seed(seed)  # a new text projection starts from seeded random weights
        unet, changes = adapt_unet_to_text_width(unet, text_width, pooled_dim if pooled else None)
        if changes:
            logger.info("unet.pretrained %s adapted to %d-wide T-CLIP tokens: %s", path, text_width, changes)
        if pooled and unet.config.class_embed_type != "projection":
            raise ValueError(f"unet.pooled_conditioning: the pretrained UNet in {path} has no projection class "
                             "embedding; set unet.pooled_conditioning=false for it")
        return unet
    cad = unet_cfg["cross_attention_dim"]
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(unet_cfg["block_out_channels"]),
        down_block_types=tuple(unet_cfg["down_block_types"]),
        up_block_types=tuple(unet_cfg["up_block_types"]),
        layers_per_block=unet_cfg["layers_per_block"],
        attention_head_dim=_tuple(unet_cfg["attention_head_dim"]),
        transformer_layers_per_block=_tuple(unet_cfg["transformer_layers_per_block"]),
        cross_attention_dim=cad,
        norm_num_groups=unet_cfg["norm_num_groups"],
        encoder_hid_dim=text_width if text_width != cad else None,
        encoder_hid_dim_type="text_proj" if text_width != cad else None,
        addition_embed_type=unet_cfg.get("addition_embed_type"),
        # attention pooling of the token states: 64-wide heads when the width allows (diffusers' default)
        addition_embed_type_num_heads=text_width // 64 if text_width % 64 == 0 else 1,
        resnet_time_scale_shift=unet_cfg.get("resnet_time_scale_shift", "default"),
        class_embed_type="projection" if pooled else None,
        projection_class_embeddings_input_dim=pooled_dim if pooled else None,
    )


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


# Keys of a pretrained folder's scheduler_config.json that define its noise schedule (what its UNet learned to
# denoise) rather than its sampler: a UNet fine-tuned or sampled under other values sees noise levels it was
# not trained for.
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                 "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")


def pretrained_scheduler_config(unet_pretrained: str | Path | None) -> Path | None:
    """The ``scheduler/scheduler_config.json`` of the SD pipeline folder that ``unet.pretrained`` names.

    ``unet_pretrained`` may be the pipeline folder or its ``unet/`` subfolder. None when it is unset or names
    a bare UNet folder (no scheduler config beside it).
    """
    if not unet_pretrained:
        return None
    path = Path(unet_pretrained)
    for folder in (path, path.parent):
        f = folder / "scheduler" / "scheduler_config.json"
        if f.is_file() and (folder == path or (path / "config.json").is_file()):
            return f
    return None


def resolve_noise_schedule(cfg: dict, *, log: bool = False) -> dict[str, Any]:
    """The noise schedule the UNet trains under and the shipped sampler uses, from the recipe config.

    From scratch (or a bare pretrained UNet folder): ``scheduler.num_train_timesteps`` and
    ``scheduler.beta_schedule``, ``train.beta_start`` / ``train.beta_end``, ``train.prediction_type``
    (null: v_prediction). When ``unet.pretrained`` names an SD pipeline folder with
    ``scheduler/scheduler_config.json``, the schedule is that file's (:data:`SCHEDULE_KEYS`: betas,
    schedule, number of steps, timestep spacing/offset), because its UNet was trained under it; the
    prediction type is ``train.prediction_type`` when set, else the file's (epsilon when it names none).

    Returns diffusers scheduler keyword arguments (``num_train_timesteps``, ``beta_schedule``, ``beta_start``,
    ``beta_end``, ``prediction_type``, and whichever other :data:`SCHEDULE_KEYS` the file states) plus
    ``"source"``: the scheduler config file, or ``"config"``. ``log``: log where the schedule came from.
    Raises ConfigError for epsilon prediction under squaredcos_cap_v2 (see thermgen.train.config).
    """
    from thermgen.train.config import ConfigError

    tc, sc = cfg["train"], cfg["scheduler"]
    schedule: dict[str, Any] = {"num_train_timesteps": sc["num_train_timesteps"], "beta_schedule": sc["beta_schedule"],
                                "beta_start": tc["beta_start"], "beta_end": tc["beta_end"]}
    explicit_pred = tc["prediction_type"]
    src = pretrained_scheduler_config(cfg["unet"].get("pretrained"))
    if src is not None:
        try:
            folder = json.loads(src.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"unet.pretrained: cannot read the noise schedule in {src}: {e}") from None
        if not isinstance(folder, dict):
            raise ValueError(f"unet.pretrained: {src} is not a scheduler config (expected a JSON object)")
        replaced = {k: schedule[k] for k in schedule if k in folder and folder[k] != schedule[k]}
        schedule.update({k: folder[k] for k in SCHEDULE_KEYS if folder.get(k) is not None})
        folder_pred = folder.get("prediction_type") or "epsilon"
        pred = explicit_pred or folder_pred
        if log:
            taken = {k: v for k, v in schedule.items() if k != "trained_betas"}
            if "trained_betas" in schedule:
                taken["trained_betas"] = f"[{len(schedule['trained_betas'])} values]"
            logger.info("noise schedule of unet.pretrained taken from %s: %s, prediction_type %s (%s)%s", src, taken,
                        pred, "train.prediction_type" if explicit_pred else "the folder's",
                        f"; the config's values not used: {replaced}" if replaced else "")
            if explicit_pred and explicit_pred != folder_pred:
                logger.warning("train.prediction_type=%s but %s's UNet was trained for %s: fine-tuning re-learns "
                               "its output (set train.prediction_type=null to keep the folder's)", explicit_pred,
                               src.parent.parent, folder_pred)
    else:
        pred = explicit_pred or "v_prediction"
        if log and cfg["unet"].get("pretrained"):
            logger.warning("unet.pretrained %s has no scheduler/scheduler_config.json beside it: the UNet trains "
                           "under the config's noise schedule %s; make sure it is the one the UNet was trained "
                           "under", cfg["unet"]["pretrained"], schedule)
    if pred == "epsilon" and schedule["beta_schedule"] == "squaredcos_cap_v2":
        raise ConfigError(f"config key 'train.prediction_type': 'epsilon' with the squaredcos_cap_v2 noise schedule "
                          f"(from {src or 'scheduler.beta_schedule'}) makes the sampler divide the UNet's error by "
                          "sqrt(alpha_bar) = 5e-5 at the first step; use train.prediction_type=v_prediction")
    schedule["prediction_type"] = pred
    schedule["source"] = str(src) if src is not None else "config"
    return schedule


def make_noise_scheduler(cfg: dict):
    """The training noise scheduler: ``scheduler.class_name`` on :func:`resolve_noise_schedule`'s schedule."""
    import diffusers

    sched_cfg = cfg["scheduler"]
    cls = getattr(diffusers, sched_cfg["class_name"], None)
    if cls is None:
        raise ValueError(f"config key 'scheduler.class_name': diffusers has no scheduler {sched_cfg['class_name']!r}")
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in resolve_noise_schedule(cfg).items() if k in accepted}
    if "clip_sample" in accepted:
        # Latents are not confined to [-1, 1]. Said explicitly (not left to the default) so that the config
        # carries it into the saved pipeline: a sampler swapped in later (DDIM, DDPM default to True) then
        # does not clip the clean-latent estimate.
        kwargs["clip_sample"] = False
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------------
# Encoding the training set once
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_texts(text_encoder, prompts: list[str], prompts_fine: list[str] | None, *, batch_size: int = 32,
                 device: str | torch.device = "cpu", progress: bool = True, desc: str = "encode captions",
                 alloc: Callable = empty_tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prompts [and fine prompts] through the frozen text encoder in batches: float32 CPU ``(states (N, L, D),
    pooled (N, P))``; pooled is None when the encoder has no pooled embedding (``TCLIPTextEncoder.pooled``).
    ``alloc(shape, dtype)`` makes the outputs, which are filled batch by batch: in memory by default, or files
    written as they are encoded (a :class:`thermgen.train.cache.RowStore`)."""
    from tqdm.auto import tqdm

    text_encoder = text_encoder.to(device).eval()
    has_pooled = hasattr(text_encoder, "pooled")
    states = pooled = None  # filled in place, batch by batch: no list of batches concatenated at the end (2x memory)
    for s in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress):
        pf = prompts_fine[s:s + batch_size] if prompts_fine is not None else None
        enc = text_encoder.encode_prompt(prompts[s:s + batch_size], pf, device=device,
                                         **({"return_pooled": True} if has_pooled else {}))
        st = (enc[0] if has_pooled else enc).float().cpu()
        if states is None:
            states = alloc((len(prompts), *st.shape[1:]), torch.float32)
        states[s:s + len(st)] = st
        if has_pooled:
            if pooled is None:
                pooled = alloc((len(prompts), *enc[1].shape[1:]), torch.float32)
            pooled[s:s + len(st)] = enc[1].float().cpu()
    if states is None:
        raise ValueError("encode_texts: no prompts to encode")
    return states, pooled


def encode_variants(variants: list[list[str]], variants_fine: list[list[str]] | None, text_encoder, *,
                    batch_size: int = 32, device: str | torch.device = "cpu", progress: bool = True,
                    alloc: Callable = empty_tensor) -> dict[str, torch.Tensor]:
    """Encode each image's other caption phrasings once: ``variants[i]`` (and ``variants_fine[i]``) are the V
    phrasings of image i (V the same for every image). Returns ``variant_states`` (N, V, L, D) and, when the
    encoder has a pooled embedding, ``variant_pooled`` (N, V, P)."""
    counts = {len(v) for v in variants} | ({len(v) for v in variants_fine} if variants_fine is not None else set())
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"encode_variants: every image needs the same positive number of phrasings, got {sorted(counts)}")
    V = counts.pop()
    flat_fine = [p for v in variants_fine for p in v] if variants_fine is not None else None
    states, pooled = encode_texts(text_encoder, [p for v in variants for p in v], flat_fine, batch_size=batch_size,
                                  device=device, progress=progress, desc="encode caption variants", alloc=alloc)
    out = {"variant_states": states.reshape(len(variants), V, *states.shape[1:])}
    if pooled is not None:
        out["variant_pooled"] = pooled.reshape(len(variants), V, pooled.shape[-1])
    return out


def encode_mirrored(prompts: list[str], prompts_fine: list[str] | None, text_encoder, *,
                    variants: list[list[str]] | None = None, variants_fine: list[list[str]] | None = None,
                    pairs=None, batch_size: int = 32, device: str | torch.device = "cpu", progress: bool = True,
                    alloc: Callable = empty_tensor) -> dict[str, torch.Tensor]:
    """The captions of the mirrored images, encoded once: each prompt (and variant) with its left/right words
    swapped (:func:`tclip.data.swap_words`, ``pairs`` defaulting to :data:`tclip.data.MIRROR_WORDS`).

    Returns :data:`MIRROR_KEYS` rows aligned with :func:`encode_training_set` / :func:`encode_variants`:
    ``mirror_text_states`` (N, L, D), ``mirror_pooled`` (N, P) when the encoder has one, and with ``variants``
    ``mirror_variant_states`` (N, V, L, D) / ``mirror_variant_pooled`` (N, V, P)."""
    from tclip.data import MIRROR_WORDS, swap_words

    pairs = MIRROR_WORDS if pairs is None else pairs

    def sw(texts):
        return [swap_words(t, pairs) for t in texts] if texts is not None else None

    states, pooled = encode_texts(text_encoder, sw(prompts), sw(prompts_fine), batch_size=batch_size, device=device,
                                  progress=progress, desc="encode mirrored captions", alloc=alloc)
    out = {"mirror_text_states": states}
    if pooled is not None:
        out["mirror_pooled"] = pooled
    if variants is not None:
        v = encode_variants([sw(x) for x in variants], [sw(x) for x in variants_fine] if variants_fine else None,
                            text_encoder, batch_size=batch_size, device=device, progress=progress, alloc=alloc)
        out.update({"mirror_" + k: t for k, t in v.items()})
    return out


@torch.no_grad()
def encode_training_set(images, prompts: list[str], prompts_fine: list[str] | None, vae, text_encoder,
                        *, batch_size: int = 32, device: str | torch.device = "cpu", progress: bool = True,
                        workers: int = 0, alloc: Callable = empty_tensor) -> dict[str, torch.Tensor]:
    """Encode images through the frozen VAE and captions through the frozen text encoder, once.

    images: float (N, 1, H, W) in [0, 1] (replicated to 3 channels for a 3-channel VAE), or a dataset of
    (1, H, W) items (e.g. :class:`thermgen.train.vae.ImageFiles`) streamed from disk by ``workers``
    DataLoader processes, so that only the latents, not the pixels, of the whole set are ever in memory.
    Returns ``latent_mean``/``latent_std`` (N, C, h, w), already multiplied by the VAE's scaling factor (and
    shifted by its shift factor), ``text_states`` (N, L, D) and ``uncond_states`` (1, L, D) (the empty
    prompt, the pipeline's unconditional input for classifier-free guidance), and when the encoder has a pooled
    prompt embedding (``TCLIPTextEncoder.pooled``) ``pooled`` (N, P) and ``uncond_pooled`` (1, P).
    ``alloc``: see :func:`encode_texts` (the per-image outputs only; the empty prompt's stay in memory).
    """
    from tqdm.auto import tqdm

    if len(prompts) != len(images) or (prompts_fine is not None and len(prompts_fine) != len(images)):
        raise ValueError(f"encode_training_set: {len(images)} images but {len(prompts)} prompts"
                         + (f" and {len(prompts_fine)} fine prompts" if prompts_fine is not None else ""))
    vae = vae.to(device).eval()
    sf = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    means = stds = None  # filled in place (see encode_texts)
    at = 0
    from tclip.data import iter_batches

    for x in tqdm(iter_batches(images, batch_size, workers), total=-(-len(images) // batch_size),
                  desc="encode training images", disable=not progress):
        x = x.to(device) * 2 - 1
        if vae.config.in_channels == 3 and x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        dist = vae.encode(x).latent_dist
        m, sd = ((dist.mean - shift) * sf).float().cpu(), (dist.std * sf).float().cpu()
        if means is None:
            means = alloc((len(images), *m.shape[1:]), torch.float32)
            stds = alloc((len(images), *sd.shape[1:]), torch.float32)
        means[at:at + len(m)], stds[at:at + len(m)] = m, sd
        at += len(m)
    if at != len(images):
        raise ValueError(f"encode_training_set: {at} images encoded, {len(images)} expected")
    states, pooled = encode_texts(text_encoder, prompts, prompts_fine, batch_size=batch_size, device=device,
                                  progress=progress, alloc=alloc)
    uncond, uncond_pooled = encode_texts(text_encoder, [""], [""] if prompts_fine is not None else None,
                                         device=device, progress=False)
    out = {"latent_mean": means, "latent_std": stds, "text_states": states, "uncond_states": uncond}
    if pooled is not None:
        out.update(pooled=pooled, uncond_pooled=uncond_pooled)
    return out


def save_cache(cache: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    write_safetensors({k: cache[k] for k in CACHE_KEYS + POOLED_KEYS + VARIANT_KEYS + MIRROR_KEYS if k in cache}, tmp)
    tmp.replace(path)


def load_cache(path: Path) -> dict[str, FileTensor]:
    """The UNet stage's training cache (:func:`save_cache`), checked, as :class:`FileTensor` s that read only the
    rows asked for (:func:`open_safetensors`), so that training's memory does not grow with the cache."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"training cache not found: {path}")
    cache = open_safetensors(path)
    missing = [k for k in CACHE_KEYS if k not in cache]
    if missing:
        raise ValueError(f"{path}: training cache lacks {missing}")
    n = {k: cache[k].shape[0] for k in ("latent_mean", "latent_std", "text_states", "pooled") + VARIANT_KEYS
         + MIRROR_KEYS if k in cache}
    if len(set(n.values())) != 1:
        raise ValueError(f"{path}: training cache rows disagree: {n}")
    return cache


# --------------------------------------------------------------------------------------------------
# Step-indexed randomness (exact resume; N processes see the global batch of 1 process)
# --------------------------------------------------------------------------------------------------
def micro_batch(k: int, *, n_samples: int, global_batch: int, seed: int, latent_shape: tuple[int, ...],
                num_train_timesteps: int, caption_dropout: float, noise_offset: float, random_flip: bool,
                n_phrasings: int = 1) -> dict[str, torch.Tensor]:
    """Sample indices and every random draw of global micro-step ``k`` (deterministic in (seed, k)).

    Returns tensors for the whole global micro-batch of ``global_batch`` samples: ``index`` (G,),
    ``eps_latent`` / ``noise`` (G, *latent_shape), ``timesteps`` (G,), ``drop`` (G,) bool, ``flip`` (G,) bool,
    and with ``n_phrasings`` > 1 ``phrasing`` (G,): 0 the caption itself, v >= 1 its (v-1)-th variant.
    """
    per_epoch = n_samples // global_batch
    epoch, pos = divmod(k, per_epoch)
    perm = torch.randperm(n_samples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    g = torch.Generator().manual_seed((seed + 1) * 2_000_029 + k)
    G = global_batch
    out = {
        "index": perm[pos * G:(pos + 1) * G],
        "eps_latent": torch.randn((G, *latent_shape), generator=g),
        "noise": torch.randn((G, *latent_shape), generator=g),
        "timesteps": torch.randint(0, num_train_timesteps, (G,), generator=g),
        "drop": torch.rand(G, generator=g) < caption_dropout,
        "flip": (torch.rand(G, generator=g) < 0.5) & random_flip,
    }
    if noise_offset:
        out["noise"] = out["noise"] + noise_offset * torch.randn((G, latent_shape[0], 1, 1), generator=g)
    if n_phrasings > 1:  # drawn last, so runs without variants keep every other draw
        out["phrasing"] = torch.randint(0, n_phrasings, (G,), generator=g)
    return out


def phrased(main: torch.Tensor, variants: torch.Tensor | None, idx: torch.Tensor,
            phrasing: torch.Tensor | None) -> torch.Tensor:
    """Rows ``idx`` of ``main`` (N, ...) as a new tensor, with row j taken from ``variants[idx[j], phrasing[j] - 1]``
    (``variants``: (N, V, ...)) where ``phrasing[j] > 0``: the cached encoding of the phrasing drawn for each sample."""
    out = main[idx].clone()
    if phrasing is None or variants is None:
        return out
    alt = phrasing > 0
    if alt.any():
        out[alt] = variants[idx[alt], phrasing[alt] - 1].to(out.dtype)
    return out


def mirror_latents(latents: torch.Tensor, patch_size: int | None = None) -> torch.Tensor:
    """The latents of the horizontally mirrored images.

    For a PatchAutoencoder (``patch_size`` p) each latent pixel holds a p x p pixel patch in its channels, so the
    patch is unfolded, mirrored and folded again (exact; a plain ``flip(-1)`` would mirror the patch order but
    not the pixels inside each patch). Without a patch size (a convolutional VAE) the latent grid is mirrored,
    the usual approximation."""
    if not patch_size or patch_size == 1:
        return latents.flip(-1)
    return F.pixel_unshuffle(F.pixel_shuffle(latents, patch_size).flip(-1), patch_size)


# --------------------------------------------------------------------------------------------------
# Logs and pictures
# --------------------------------------------------------------------------------------------------
#: Rows of a training CSV log (step, loss, lr, seconds) as numbers.
read_log = read_csv_log


def save_thermal_grid(images: np.ndarray, path: Path, *, row_labels: list[str] | None = None,
                      colormap: str = "inferno", title: str | None = None, shared_range: bool = True) -> None:
    """Save images (R, C, H, W) float in [0, 1] (white-hot) as a colour-mapped grid PNG with row labels.

    shared_range: map the grid's 1st-99th percentile (one range for every tile, so tiles stay comparable)
    to the colour map; False maps the full [0, 1] "fixed" range (low-contrast scenes then look flat).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"save_thermal_grid: expected (rows, cols, H, W), got shape {images.shape}")
    R, C = images.shape[:2]
    lo, hi = (np.percentile(images, [1, 99]) if shared_range else (0.0, 1.0))
    if hi - lo < 1e-6:
        lo, hi = 0.0, 1.0
    fig, axes = plt.subplots(R, C, figsize=(1.6 * C + (2.6 if row_labels else 0), 1.6 * R + 0.4), squeeze=False)
    for r in range(R):
        for c in range(C):
            ax = axes[r][c]
            ax.imshow(np.clip(images[r, c], 0, 1), cmap=colormap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        if row_labels:
            import textwrap

            axes[r][0].set_ylabel("\n".join(textwrap.wrap(row_labels[r], 32)[:5]), fontsize=6, rotation=0,
                                  ha="right", va="center", labelpad=4)
    if title:
        rng = f" [colour range {lo:.3f}-{hi:.3f}]" if shared_range else ""
        fig.suptitle(title + rng, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_inference_scheduler(cfg: dict):
    """The sampler the pipeline ships: ``scheduler.inference_scheduler`` on the training noise schedule
    (:func:`resolve_noise_schedule`: a pretrained SD folder's when ``unet.pretrained`` names one)."""
    import diffusers

    name = cfg["scheduler"]["inference_scheduler"]
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ValueError(f"config key 'scheduler.inference_scheduler': diffusers has no scheduler {name!r}")
    return cls.from_config(make_noise_scheduler(cfg).config)


def build_pipeline(vae, unet, text_encoder, cfg: dict):
    """A ThermalDiffusionPipeline around the given components with the recipe config's inference scheduler."""
    from pipelines import ThermalDiffusionPipeline

    scheduler = make_inference_scheduler(cfg)
    return ThermalDiffusionPipeline(vae=vae, unet=unet, scheduler=scheduler, text_encoder=text_encoder)


@torch.no_grad()
def sample_images(pipe, prompts: list[str], *, n_per_prompt: int, steps: int, guidance: float, seed: int,
                  resolution: int, prompts_fine: list[str] | None = None, batch: int = 16) -> np.ndarray:
    """Generate ``n_per_prompt`` images per prompt: float32 (len(prompts), n_per_prompt, H, W) in [0, 1].

    Image ``j`` of prompt ``i`` is seeded with ``seed + j`` regardless of batching, so that rows are comparable.
    """
    out = np.zeros((len(prompts), n_per_prompt, resolution, resolution), dtype=np.float32)
    for i, p in enumerate(prompts):
        for s in range(0, n_per_prompt, batch):
            js = list(range(s, min(n_per_prompt, s + batch)))
            gens = [torch.Generator().manual_seed(seed + j) for j in js]
            kw = {"prompt_fine": [prompts_fine[i]] * len(js)} if prompts_fine is not None else {}
            res = pipe(prompt=[p] * len(js), num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                       height=resolution, width=resolution, output_type="np", **kw)
            imgs = np.asarray(res.images, dtype=np.float32)
            out[i, js[0]:js[-1] + 1] = imgs.reshape(len(js), resolution, resolution)
    return out


# --------------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------------
def train_unet(cfg: dict, cache: dict[str, torch.Tensor] | Path, out_dir: Path, *, resume: bool | str = False,
               vae=None, text_encoder=None, progress: bool = True,
               step_callback: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train the UNet on a cached training set; write ``out_dir/unet/`` and reports. Returns the report dict.

    cfg: the recipe config (sections ``run``, ``unet``, ``train``, ``scheduler``; see thermgen.train.config).
    cache: :func:`encode_training_set`'s tensors, or the path of their safetensors file.
    out_dir: receives ``unet/`` (the trained UNet: EMA weights when enabled, LoRA fused), ``unet_lora/``
        (LoRA weights alone, diffusers format, when LoRA), ``checkpoints/checkpoint-<step>/`` (accelerate
        states, rotated), ``logs/train_log.csv`` (step, loss, lr, seconds), ``loss_curve.png``,
        ``validation/step-<N>.png`` (when vae and text_encoder are given), ``train_report.json``.
    resume: False; True/"latest" (the newest complete checkpoint in out_dir, if any); or a checkpoint path.
    vae: for the validation grids, and it tells how latents mirror under ``train.random_flip``
        (:func:`mirror_latents`: exactly for a PatchAutoencoder; without a vae the latent grid is mirrored).
    step_callback: called on every process after each optimizer step (and its checkpoint) with
        (step, loss averaged over processes).
    """
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel, compute_snr
    from tqdm.auto import tqdm

    t0 = time.time()
    tc, rc = cfg["train"], cfg["run"]
    out_dir = Path(out_dir)
    if not isinstance(cache, dict):
        cache = load_cache(Path(cache))
    n = cache["latent_mean"].shape[0]
    latent_shape = tuple(cache["latent_mean"].shape[1:])
    text_width = cache["text_states"].shape[-1]

    use_cpu = rc["device"] == "cpu" or (rc["device"] == "auto" and not torch.cuda.is_available())
    # The micro-batches come from micro_batch(), not from a prepared DataLoader: gradient sync must follow the step
    # count alone, never the end-of-epoch flag of some other loop's loader left in accelerate's process-wide
    # GradientState (an earlier stage in the same process, or one interrupted).
    accelerator = Accelerator(
        cpu=use_cpu,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=tc["gradient_accumulation_steps"],
                                                                sync_with_dataloader=False),
        mixed_precision=tc["mixed_precision"],
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
        log_with=make_trackers("unet", out_dir / "logs", filename="train_log.csv", resume=bool(resume),
                               report_to=tc["report_to"]),
    )
    world, rank = accelerator.num_processes, accelerator.process_index
    G = tc["train_batch_size"]  # the global micro-batch, shared out among the processes
    if G % world:
        raise ValueError(f"config key 'train.train_batch_size' ({G}) must be divisible by the {world} processes: it "
                         "is the global batch, split among them")
    bs = G // world
    if n < G:
        raise ValueError(f"config key 'train.train_batch_size': {G} exceeds the {n} training images")

    seed = rc["seed"]
    use_pooled = bool(cfg["unet"].get("pooled_conditioning"))
    if use_pooled and not all(k in cache for k in POOLED_KEYS):
        raise ValueError("unet.pooled_conditioning is true but the training cache has no pooled prompt embeddings "
                         f"({', '.join(POOLED_KEYS)}): encode it with a text encoder that has .pooled (TCLIPTextEncoder)")
    unet = build_unet(cfg["unet"], latent_channels=latent_shape[0], latent_size=latent_shape[-1],
                      text_width=text_width, seed=seed,
                      pooled_dim=int(cache["pooled"].shape[-1]) if use_pooled else None)
    schedule = resolve_noise_schedule(cfg, log=accelerator.is_main_process)
    noise_scheduler = make_noise_scheduler(cfg)
    pred_type = schedule["prediction_type"]

    lora = tc["lora_rank"] > 0
    if lora:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=tc["lora_rank"], lora_alpha=tc["lora_alpha"] or tc["lora_rank"],
                                    init_lora_weights="gaussian", target_modules=list(tc["lora_target_modules"])))
        # The width bridge (text_proj) is new or task-specific: it learns alongside the adapter.
        if unet.encoder_hid_proj is not None:
            unet.encoder_hid_proj.requires_grad_(True)
    if tc["gradient_checkpointing"]:
        unet.enable_gradient_checkpointing()
    params = [p for p in unet.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)

    lr = tc["learning_rate"]
    if tc["scale_lr"]:
        lr = lr * tc["gradient_accumulation_steps"] * G
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(tc["adam_beta1"], tc["adam_beta2"]),
                                  weight_decay=tc["adam_weight_decay"], eps=tc["adam_epsilon"])
    # Stepped once per optimizer step by hand (not prepared), so the schedule does not depend on the number
    # of processes.
    lr_scheduler = get_scheduler(tc["lr_scheduler"], optimizer=optimizer, num_warmup_steps=tc["lr_warmup_steps"],
                                 num_training_steps=tc["max_train_steps"])
    ema = None
    if tc["use_ema"]:
        ema = EMAModel(params, decay=tc["ema_decay"], use_ema_warmup=True, power=3 / 4)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    if ema is not None:
        ema.to(accelerator.device)

    ckpt_dir = out_dir / "checkpoints"
    checkpoints = Checkpointer(accelerator, ckpt_dir, limit=tc["checkpoints_total_limit"], lr_scheduler=lr_scheduler,
                               ema=ema)
    log_path = out_dir / "logs" / "train_log.csv"
    global_step = 0
    resumed_from = None
    if resume:
        path = checkpoints.find(resume)
        if path is None:
            accelerator.print(f"--resume: no complete checkpoint in {ckpt_dir}; starting from step 0")
        else:
            global_step, _, _ = checkpoints.load(path)
            resumed_from = str(path)
            accelerator.print(f"resumed from {path} (step {global_step})")

    accelerator.init_trackers("unet", config=tracker_config(cfg))
    if accelerator.is_main_process:
        # Rows past the checkpoint belong to the interrupted tail; the resumed run writes them again.
        csv_tracker(accelerator).drop_rows(lambda r: r["step"] > global_step)

    lat_mean = cache["latent_mean"]
    lat_std = cache["latent_std"]
    text = cache["text_states"]
    uncond = cache["uncond_states"][0]
    pooled_all = cache["pooled"] if use_pooled else None
    uncond_pooled = cache["uncond_pooled"][0] if use_pooled else None
    var_states = cache.get("variant_states") if tc["caption_variants"] else None
    var_pooled = cache.get("variant_pooled") if tc["caption_variants"] and use_pooled else None
    if tc["caption_variants"] and (var_states is None or (use_pooled and var_pooled is None)):
        raise ValueError("train.caption_variants: the training cache has no variant_states"
                         + ("/variant_pooled" if use_pooled else "") + " (encode the manifest's caption_variants "
                         "with thermgen.train.unet.encode_variants)")
    n_phrasings = 1 + (var_states.shape[1] if var_states is not None else 0)
    if tc["random_flip"]:
        need = ["mirror_text_states"] + (["mirror_pooled"] if use_pooled else [])
        if var_states is not None:
            need += ["mirror_variant_states"] + (["mirror_variant_pooled"] if use_pooled else [])
        missing = [k for k in need if k not in cache]
        if missing:
            raise ValueError(f"train.random_flip: the training cache has no {', '.join(missing)}; captions name "
                             "left and right, so a mirrored image needs its mirrored captions "
                             "(thermgen.train.unet.encode_mirrored)")
    # How latents mirror: exactly for a PatchAutoencoder (its patch size), by the latent grid otherwise.
    patch = getattr(vae.config, "patch_size", None) if vae is not None else None
    accum = tc["gradient_accumulation_steps"]
    val_every = tc["validation_steps"]
    do_val = vae is not None and text_encoder is not None and accelerator.is_main_process

    bar = tqdm(total=tc["max_train_steps"], initial=global_step, desc="unet", disable=not (progress and
               accelerator.is_local_main_process))
    unet.train()
    loss_val = float("nan")
    while global_step < tc["max_train_steps"]:
        step_loss = 0.0
        for m in range(accum):
            k = global_step * accum + m
            mb = micro_batch(k, n_samples=n, global_batch=G, seed=seed, latent_shape=latent_shape,
                             num_train_timesteps=noise_scheduler.config.num_train_timesteps,
                             caption_dropout=tc["caption_dropout"], noise_offset=tc["noise_offset"],
                             random_flip=tc["random_flip"], n_phrasings=n_phrasings)
            sl = slice(rank * bs, (rank + 1) * bs)
            idx = mb["index"][sl]
            latents = lat_mean[idx] + lat_std[idx] * mb["eps_latent"][sl]
            flip = mb["flip"][sl]
            phr = mb["phrasing"][sl] if n_phrasings > 1 else None
            states = phrased(text, var_states, idx, phr)
            if flip.any():  # the mirrored image with its mirrored caption (left/right swapped)
                latents[flip] = mirror_latents(latents[flip], patch)
                states[flip] = phrased(cache["mirror_text_states"], cache.get("mirror_variant_states") if
                                       var_states is not None else None, idx[flip], phr[flip] if phr is not None else None)
            drop = mb["drop"][sl]
            if drop.any():
                states[drop] = uncond.to(states.dtype)
            class_labels = None
            if use_pooled:
                class_labels = phrased(pooled_all, var_pooled, idx, phr)
                if flip.any():
                    class_labels[flip] = phrased(cache["mirror_pooled"], cache.get("mirror_variant_pooled") if
                                                 var_pooled is not None else None, idx[flip],
                                                 phr[flip] if phr is not None else None)
                if drop.any():
                    class_labels[drop] = uncond_pooled.to(class_labels.dtype)
                class_labels = class_labels.to(accelerator.device)
            noise = mb["noise"][sl]
            timesteps = mb["timesteps"][sl]
            dev = accelerator.device
            latents, noise, timesteps, states = latents.to(dev), noise.to(dev), timesteps.to(dev), states.to(dev)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            target = noise if pred_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
            with accelerator.accumulate(unet):
                pred = unet(noisy, timesteps, states, class_labels=class_labels, return_dict=False)[0]
                per = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
                if tc["snr_gamma"] is not None:
                    snr = compute_snr(noise_scheduler, timesteps)
                    w = torch.minimum(snr, torch.full_like(snr, tc["snr_gamma"]))
                    w = w / snr if pred_type == "epsilon" else w / (snr + 1)
                    per = per * w
                loss = per.mean()
                step_loss += accelerator.gather(loss.detach()[None]).mean().item() / accum
                accelerator.backward(loss)
                if accelerator.sync_gradients and tc["max_grad_norm"] > 0:
                    accelerator.clip_grad_norm_(params, tc["max_grad_norm"])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        lr_scheduler.step()
        if ema is not None:
            ema.step(params)
        global_step += 1
        loss_val = step_loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss_val:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        accelerator.log({"loss": loss_val, "lr": lr_scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 3)},
                        step=global_step)
        if global_step % tc["checkpointing_steps"] == 0 or global_step == tc["max_train_steps"]:
            checkpoints.save(global_step)
        if do_val and (global_step % val_every == 0 or global_step == tc["max_train_steps"]):
            _validate(accelerator.unwrap_model(unet), ema, params, vae, text_encoder, cfg, out_dir, global_step)
        if step_callback is not None:
            step_callback(global_step, loss_val)
    bar.close()
    accelerator.wait_for_everyone()

    report: dict[str, Any] = {}
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(params)
        if lora:
            from peft.utils import get_peft_model_state_dict

            from diffusers import StableDiffusionPipeline
            from diffusers.utils import convert_state_dict_to_diffusers

            lora_sd = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
            StableDiffusionPipeline.save_lora_weights(out_dir / "unet_lora", unet_lora_layers=lora_sd,
                                                      safe_serialization=True)
            model.fuse_lora()
            model.unload_lora()
        model.save_pretrained(out_dir / "unet")
        rows = read_log(log_path)
        plot_rows(rows, out_dir / "loss_curve.png", y="loss", title="UNet training loss", ylabel="loss", logy=True,
                  smooth=True)
        report = {
            "steps": global_step, "final_loss": loss_val,
            "loss_first_10": float(np.mean([r["loss"] for r in rows[:10]])) if rows else None,
            "loss_last_10": float(np.mean([r["loss"] for r in rows[-10:]])) if rows else None,
            "num_processes": world, "global_batch": G * accum, "train_images": n,
            "trainable_parameters": n_trainable, "lora_rank": tc["lora_rank"], "ema": ema is not None,
            "prediction_type": pred_type, "snr_gamma": tc["snr_gamma"], "caption_phrasings": n_phrasings,
            "noise_schedule": {k: v for k, v in schedule.items() if k != "trained_betas"},
            "resumed_from": resumed_from, "seconds": round(time.time() - t0, 2),
            "unet": str(out_dir / "unet"), "log": str(log_path), "loss_curve": str(out_dir / "loss_curve.png"),
        }
        (out_dir / "train_report.json").write_text(json.dumps(report, indent=2))
    for tracker in accelerator.trackers:  # not end_training(): that also ends the process group of a caller's run
        tracker.finish()
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return report


def _validate(unet, ema, params, vae, text_encoder, cfg, out_dir: Path, step: int) -> None:
    """Render the validation prompts with the current (EMA, when enabled) weights into a grid PNG."""
    tc = cfg["train"]
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    was_training = unet.training
    unet.eval()
    try:
        pipe = build_pipeline(vae, unet, text_encoder, cfg)
        pipe.set_progress_bar_config(disable=True)
        imgs = sample_images(pipe, list(tc["validation_prompts"]), n_per_prompt=tc["validation_images_per_prompt"],
                             steps=tc["validation_inference_steps"], guidance=tc["guidance_scale"],
                             seed=cfg["run"]["seed"], resolution=tc["resolution"])
        save_thermal_grid(imgs, out_dir / "validation" / f"step-{step:06d}.png",
                          row_labels=list(tc["validation_prompts"]), title=f"validation, step {step}")
    finally:
        if ema is not None:
            ema.restore(params)
        unet.train(was_training)


# --------------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from thermgen.train.config import ConfigError, load_config

    p = argparse.ArgumentParser(
        prog="python -m thermgen.train.unet",
        description="Train the UNet stage alone on a cached training set (written by the recipe, "
                    "`python -m thermgen.train`, as RUN/unet/cache.safetensors). Runs under torchrun / "
                    "accelerate launch for several processes.")
    p.add_argument("--cache", required=True, type=Path, help="safetensors training cache (latents + token states)")
    p.add_argument("--out", required=True, type=Path, help="output folder (unet/, checkpoints/, logs/, reports)")
    p.add_argument("--config", type=Path, default=None, help="recipe YAML (default: the built-in CPU recipe)")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="resume from the newest checkpoint in OUT/checkpoints (or from the given folder)")
    p.add_argument("--pipeline", type=Path, default=None,
                   help="pipeline folder whose vae/ and text_encoder/ render validation grids (default: none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="config overrides section.key=value, e.g. train.max_train_steps=50")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg["run"]["threads"]:
        torch.set_num_threads(cfg["run"]["threads"])
    vae = te = None
    if args.pipeline is not None:
        import tclip.text_encoder  # noqa: F401  (diffusers resolves the text component's class by module name)
        from pipelines import ThermalDiffusionPipeline

        if not (args.pipeline / "model_index.json").is_file():  # a local folder only, never a hub id
            print(f"error: --pipeline {args.pipeline}: not a pipeline folder (no model_index.json)", file=sys.stderr)
            return 2
        pipe = ThermalDiffusionPipeline.from_pretrained(args.pipeline, local_files_only=True)
        vae, te = pipe.vae, pipe.text_encoder
    train_unet(cfg, args.cache, args.out, resume=args.resume or False, vae=vae, text_encoder=te,
               progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
