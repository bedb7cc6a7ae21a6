"""Recipe configuration: one dataclass per stage, composed into one tree, loaded from YAML and validated.

A recipe config is data (``configs/*.yaml``). Every key has a type and a default, declared once as a field of its
section's dataclass (:data:`SECTIONS`: ``RunConfig``, ``DataConfig``, ``CaptionsConfig``, ``TClipConfig``,
``VAEConfig``, ``UNetConfig``, ``TrainConfig``, ``SchedulerConfig``, ``EvalConfig``, composed in
:class:`RecipeConfig`); :data:`SCHEMA`, ``--list-keys`` and the checks are derived from them. The T-CLIP and VAE
stages' own settings (``tclip.train``, ``vae.train``) are typed by those stages (``tclip.train.DEFAULT_CONFIG``,
``thermgen.train.vae.VAE_DEFAULTS``), checked by their loaders when the recipe config loads, and changed one at a time
with nested overrides (``vae.train.steps=200``). :func:`load_config` returns the plain nested dict that run
folders store; :func:`load_recipe_config` the typed :class:`RecipeConfig`. A YAML file only states what it changes.
Loading checks every key and value and raises
:class:`ConfigError` naming the key (``train.learning_rate``) and, for a file, the file. Command-line
overrides are ``dotted.key=value`` with the value parsed as YAML (``train.max_train_steps=50``,
``train.snr_gamma=null``, ``train.validation_prompts=["a", "b"]``).

Sections (see ``python -m thermgen.train --list-keys`` for every key, its default and meaning):

``data``       where the images come from (a registered source + root, or synthetic scenes generated into the run)
``captions``   IR-Cap captioning of every split into ``RUN/manifest.jsonl``
``tclip``      T-CLIP training (``python -m tclip.train``) into ``RUN/tclip/``
``vae``        the 1-channel AutoencoderKL trained from scratch, or a pretrained SD VAE
``unet``       the UNet architecture (from scratch) or a pretrained SD-format UNet, and how T-CLIP conditions it
``train``      the UNet training loop (optimiser, schedule, EMA, LoRA, checkpoints, validation)
``scheduler``  the noise schedule (a diffusers scheduler class and its config)
``eval``       generation for the test captions, metrics, the base-text-tower ablation, the contrast report

**Noise schedule.** From scratch it is ``scheduler.beta_schedule`` over ``scheduler.num_train_timesteps`` with
``train.beta_start`` / ``train.beta_end`` (linear and scaled_linear only) and ``train.prediction_type`` (null:
v_prediction; epsilon is refused under squaredcos_cap_v2, whose last step leaves the sampler dividing by 5e-5).
When ``unet.pretrained`` names a Stable Diffusion pipeline folder with ``scheduler/scheduler_config.json``, the
schedule its UNet was trained under is taken from that file instead (betas, schedule, steps, timestep
spacing/offset; the prediction type too unless ``train.prediction_type`` is set) and logged:
``thermgen.train.unet.resolve_noise_schedule``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad recipe config or override. The message names the key (and the file when there is one)."""


@dataclass(frozen=True)
class Field:
    """One config key: its type(s), default, allowed values and a one-line meaning."""

    type: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple | None = None
    nullable: bool = False
    min: float | None = None
    item_type: type | tuple[type, ...] | None = None  # element type for list-valued keys


_NUM = (int, float)
_LIST = (list,)


def key(type: type | tuple[type, ...], default: Any, help: str, **kw: Any) -> Any:
    """A recipe config key as a dataclass field: its default (copied per instance when mutable) and its
    :class:`Field` (type, allowed values, meaning) in the field's ``metadata["schema"]``."""
    f = Field(type, default, help, **kw)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"schema": f})
    return dataclasses.field(default=default, metadata={"schema": f})


# The CPU default lives here so that `python -m thermgen.train` with no flags is the whole recipe on 2 cores;
# configs/cpu-default.yaml restates it as a readable file.
#: Every section of the recipe config as a dataclass: one per stage (and ``run`` for what they share). Each
#: field's default, type, allowed values and meaning are its :class:`Field` (``dataclasses.fields(cls)[i].metadata
#: ["schema"]``); :data:`SCHEMA`, the loader's checks, ``--list-keys`` and the typed view :class:`RecipeConfig`
#: are all derived from these classes.


@dataclass
class RunConfig:
    """``run``: Seed, device, threads and processes shared by every stage."""

    seed: int = key(int, 0, "global seed: data generation, captions, T-CLIP, VAE, UNet, sampling")
    device: str = key(str, "auto", "'auto' (CUDA when present), 'cpu' or 'cuda'", choices=("auto", "cpu", "cuda"))
    threads: int | None = key(int, None, "torch CPU threads (None: torch's default, one per core); 1 is much faster "
                              "when other jobs share the cores", nullable=True, min=1)
    num_processes: int = key(int, 1, "data-parallel processes for each training stage (T-CLIP, VAE, UNet): "
                             "torchrun with gloo on CPU, NCCL on GPUs; batch sizes stay global, so the loss curves "
                             "do not depend on it (python -m thermgen.train --num-processes N)", min=1)


@dataclass
class DataConfig:
    """``data``: The data stage: where the images come from."""

    source: str = key(str, "synthetic", "dataset adapter (thermgen.data.load_samples) or 'synthetic'",
                      choices=("synthetic", "hit-uav", "coco", "voc", "kaist", "folder"))
    root: str | None = key(str, None, "dataset root; for 'synthetic' the scenes are generated into RUN/data", nullable=True)
    synthetic_n: int = key(int, 800, "synthetic scenes to generate (all splits together)", min=10)
    synthetic_size: int = key(int, 64, "synthetic scene size in pixels", min=16)
    skip_invalid: bool = key(bool, False, "skip (and count) bad records instead of failing")
    train_split: str = key(str, "train", "split the models train on")
    val_split: str = key(str, "val", "split used for validation / choosing settings")
    test_split: str = key(str, "test", "split the generation metrics are computed on")
    max_train_images: int | None = key(int, None, "cap on training images (None: all)", nullable=True, min=1)


@dataclass
class CaptionsConfig:
    """``captions``: The captions stage: IR-Cap captioning of every split into ``RUN/manifest.jsonl``."""

    backend: str = key(str, "rules", "IR-Cap backend", choices=("rules", "transformers", "openai"))
    seed: int = key(int, 0, "caption phrasing seed")
    variants: int = key(int, 0, "other phrasings stored per caption, drawn by T-CLIP training as text augmentation "
                                "(thermgen.caption --variants); tclip's HIT-UAV setting uses 8", min=0)
    terse_variants: int = key(int, 0, "terse global phrasings added per caption (thermgen.caption --terse-variants: "
                                      "fragments, numbers and units as people write them), for prompts in a user's "
                                      "own words", min=0)


@dataclass
class TClipConfig:
    """``tclip``: The T-CLIP stage: which training config, and changes to it (its own keys, checked by tclip.train)."""

    dir: str | None = key(str, None, "use this trained T-CLIP folder instead of training one (skips the "
                              "training; its content enters the stage hash, so a folder retrained in place reruns "
                              "the UNets)", nullable=True)
    config: str = key(str, "recipe-cpu", "T-CLIP training config (python -m tclip.train --config): a name in "
                      "tclip/train_configs (recipe-cpu: the tiny model, 400 base + 150 adapter steps; hituav-cpu; "
                      "paper-vitb16; ...) or a JSON/YAML file")
    train: dict[str, Any] = key(dict, {}, "overrides merged into that training config, with its key names (e.g. {base_stage: "
                                "{steps: 2, batch_size: 8}, lora: {r: 4}}); checked when the recipe config loads")


@dataclass
class VAEConfig:
    """``vae``: The VAE stage: a pretrained SD VAE or the settings of the one trained here (checked by its trainer)."""

    pretrained: str | None = key(str, None, "pretrained SD VAE folder (a pipeline folder or its vae/); None: train a "
                                 "1-channel AutoencoderKL from scratch", nullable=True)
    train: dict[str, Any] = key(dict, {}, "settings passed to thermgen.train.vae.train_vae (see its docstring)")


@dataclass
class UNetConfig:
    """``unet``: The UNet architecture, or a pretrained SD UNet, and how T-CLIP conditions it."""

    pretrained: str | None = key(str, None, "SD-format pipeline folder (uses its unet/) or a UNet folder; None: build from "
                                 "the sizes below", nullable=True)
    conditioning: str = key(str, "fused", "TCLIPTextEncoder mode that conditions the UNet (measured on HIT-UAV val with "
                            "v-prediction: fused ties concat with half the tokens and ranks own prompts better "
                            "than global; thermgen/train/conditioning.py, RUN/reports/conditioning.md)",
                            choices=("concat", "fused", "global", "fine", "base"))
    fusion_alpha: float | None = key(_NUM, None, "weight of the global adapter in the fused modes (fused, concat's "
                                     "pooled embedding); None: the T-CLIP folder's own fusion alpha (its "
                                     "tclip_config.json), e.g. 0.8; set it to the alpha chosen on val for a given "
                                     "tclip.dir", nullable=True, min=0)
    block_out_channels: list[int] = key(list, [64, 128], "channels per UNet level", item_type=int)
    down_block_types: list[str] = key(list, ["DownBlock2D", "CrossAttnDownBlock2D"], "diffusers down block classes", item_type=str)
    up_block_types: list[str] = key(list, ["CrossAttnUpBlock2D", "UpBlock2D"], "diffusers up block classes", item_type=str)
    layers_per_block: int = key(int, 1, "resnet layers per level", min=1)
    attention_head_dim: int | list[int] = key((int, list), 8, "channels per attention head (or one per level)")
    transformer_layers_per_block: int | list[int] = key((int, list), 1, "transformer layers per cross-attention block "
                                                        "(or one per level; SDXL: [1, 2, 10])")
    cross_attention_dim: int = key(int, 128, "cross-attention width; the T-CLIP width is projected to it "
                                   "(encoder_hid_dim_type='text_proj') when they differ", min=1)
    norm_num_groups: int = key(int, 32, "GroupNorm groups", min=1)
    pooled_conditioning: bool = key(bool, False, "also condition on T-CLIP's pooled prompt embedding (the contrastive "
                                    "end-of-text embedding, fused like retrieval), through diffusers' "
                                    "class_embed_type='projection': added to the timestep embedding of every "
                                    "resnet block, as SDXL adds its pooled text embedding")
    resnet_time_scale_shift: str = key(str, "default", "how the timestep (+ pooled prompt) embedding enters each "
                                       "resnet block: 'default' adds it as a bias; 'scale_shift' modulates the "
                                       "normalised features (FiLM, as in ADM/Imagen)",
                                       choices=("default", "scale_shift"))
    addition_embed_type: str | None = key(str, "text", "'text': the attention-pooled T-CLIP token states are also added "
                                          "to the timestep embedding of every resnet block (diffusers "
                                          "addition_embed_type='text'), so scene-wide attributes (day/night, weather) "
                                          "reach the whole UNet; null: cross-attention only", nullable=True,
                                          choices=("text",))


@dataclass
class TrainConfig:
    """``train``: The UNet training loop: optimiser, schedule, EMA, LoRA, checkpoints, validation."""

    resolution: int = key(int, 64, "training/generation size in pixels (whole frame resized, square)", min=8)
    train_batch_size: int = key(int, 8, "global micro-batch (all processes together; each of N takes 1/N)", min=1)
    max_train_steps: int = key(int, 600, "optimizer steps", min=1)
    gradient_accumulation_steps: int = key(int, 1, "micro-batches per optimizer step", min=1)
    learning_rate: float = key(_NUM, 1e-3, "AdamW learning rate", min=0)
    scale_lr: bool = key(bool, False, "multiply the lr by accumulation x batch x processes")
    lr_scheduler: str = key(str, "cosine", "diffusers.optimization.get_scheduler name",
                            choices=("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                                     "constant_with_warmup"))
    lr_warmup_steps: int = key(int, 20, "warm-up optimizer steps", min=0)
    adam_beta1: float = key(_NUM, 0.9, "AdamW beta1")
    adam_beta2: float = key(_NUM, 0.999, "AdamW beta2")
    adam_weight_decay: float = key(_NUM, 1e-2, "AdamW weight decay", min=0)
    adam_epsilon: float = key(_NUM, 1e-8, "AdamW epsilon", min=0)
    max_grad_norm: float = key(_NUM, 1.0, "gradient-norm clip", min=0)
    prediction_type: str | None = key(str, None, "what the UNet predicts; null: the pretrained SD folder's (unet.pretrained, "
                                      "its scheduler/scheduler_config.json), else v_prediction. 'epsilon' only with a "
                                      "schedule whose last step keeps some signal (scaled_linear, linear), not "
                                      "squaredcos_cap_v2", choices=("epsilon", "v_prediction"), nullable=True)
    beta_start: float = key(_NUM, 1e-4, "noise schedule's first beta for 'linear'/'scaled_linear' (unused by "
                            "squaredcos_cap_v2; SD: 0.00085). Ignored when unet.pretrained names an SD folder: "
                            "its scheduler/scheduler_config.json's schedule is used", min=0)
    beta_end: float = key(_NUM, 0.02, "noise schedule's last beta for 'linear'/'scaled_linear' (SD: 0.012); as "
                          "train.beta_start", min=0)
    snr_gamma: float | None = key(_NUM, 5.0, "min-SNR loss weighting gamma (None: plain MSE)", nullable=True, min=0)
    noise_offset: float = key(_NUM, 0.0, "noise offset (brighter/darker whole images)", min=0)
    caption_dropout: float = key(_NUM, 0.1, "probability a caption is replaced by the empty prompt "
                                 "(trains the unconditional branch for classifier-free guidance)", min=0)
    caption_variants: bool = key(bool, False, "each step draws one of the image's IR-Cap phrasings (its caption or "
                                 "one of the manifest's caption_variants; captions.variants > 0) as the prompt: "
                                 "the UNet learns the stated facts, not one sentence per image")
    random_flip: bool = key(bool, False, "mirror half the training images left to right, each with its mirrored "
                            "caption (left/right words swapped, tclip.data.MIRROR_WORDS): twice the layouts")
    use_ema: bool = key(bool, True, "keep an EMA of the UNet weights and ship it")
    ema_decay: float = key(_NUM, 0.999, "EMA decay (with warm-up)", min=0)
    lora_rank: int = key(int, 0, "0: full fine-tuning; >0: LoRA of this rank on the UNet attention", min=0)
    lora_alpha: int | None = key(int, None, "LoRA alpha (None: = rank)", nullable=True, min=1)
    lora_target_modules: list[str] = key(list, ["to_k", "to_q", "to_v", "to_out.0"], "LoRA target modules", item_type=str)
    mixed_precision: str = key(str, "no", "accelerate mixed precision", choices=("no", "fp16", "bf16"))
    gradient_checkpointing: bool = key(bool, False, "trade compute for memory")
    checkpointing_steps: int = key(int, 200, "save_state every N optimizer steps", min=1)
    checkpoints_total_limit: int | None = key(int, 2, "keep at most this many checkpoints (None: all)", nullable=True, min=1)
    validation_steps: int = key(int, 300, "validation grid every N optimizer steps (and at the end)", min=1)
    validation_prompts: list[str] = key(list, [
                "An infrared thermal image of a parking lot with many cars at night.",
                "An infrared thermal image of a road with a few people during the day.",
            ], "prompts rendered into the validation grids", item_type=str)
    validation_images_per_prompt: int = key(int, 4, "images per validation prompt", min=1)
    validation_inference_steps: int = key(int, 25, "sampler steps for validation grids", min=1)
    guidance_scale: float = key(_NUM, 3.0, "classifier-free guidance for validation and evaluation", min=0)
    report_to: str = key(str, "csv", "training logs of every stage (T-CLIP, VAE, UNet), through accelerate's "
                         "trackers: 'csv' (always written) or 'tensorboard' (also, when installed)",
                         choices=("csv", "tensorboard"))


@dataclass
class SchedulerConfig:
    """``scheduler``: The noise schedule: a diffusers scheduler class and its config."""

    class_name: str = key(str, "DDPMScheduler", "diffusers training noise scheduler")
    num_train_timesteps: int = key(int, 1000, "diffusion steps (a pretrained SD folder's own when unet.pretrained "
                                   "names one)", min=1)
    beta_schedule: str = key(str, "squaredcos_cap_v2", "beta schedule, with train.beta_start/beta_end (a "
                             "pretrained SD folder's own when unet.pretrained names one)",
                             choices=("linear", "scaled_linear", "squaredcos_cap_v2"))
    inference_scheduler: str = key(str, "DPMSolverMultistepScheduler", "scheduler saved into the pipeline")


@dataclass
class EvalConfig:
    """``eval``: The ablation, judge, contrast and evaluate stages."""

    enabled: bool = key(bool, True, "run the evaluation stage")
    max_test_prompts: int | None = key(int, 64, "generate for at most this many test captions (None: all)", nullable=True, min=1)
    num_inference_steps: int = key(int, 20, "sampler steps", min=1)
    feature: str = key(str, "inception", "FID feature: 'inception' or 'tclip'", choices=("inception", "tclip"))
    ablation: bool = key(bool, True, "also train the same UNet conditioned on the base (un-adapted) text tower")
    contrast_images_per_prompt: int = key(int, 8, "samples per contrast prompt", min=2)
    grid_prompts: int = key(int, 4, "test captions shown in the sample grid", min=1)
    judge: bool = key(bool, True, "train the attribute judge (Inception features + linear heads on the real train "
                      "split; thermgen.judge) and grade generated images and the one-fact swap test with it")
    seeds: list[int] | None = key(list, None, "generation seeds of the evaluation (FID, attributes, swaps reported as mean ± std "
                                  "over them); None: [run.seed]", nullable=True, item_type=int)
    swap_pairs: int = key(int, 64, "prompt pairs per swap kind (time of day, people, cars) in the swap test", min=1)
    contrast_scale: float | None = key(_NUM, None, "also evaluate each conditioner with contrastive guidance along the time "
                                       "of day at this weight (the pipeline's contrast_prompt: each test caption's IR-Cap "
                                       "facts with the time of day edited; each swap side contrasted with the other), as "
                                       "its own '<conditioner>+contrast' rows; None: plain guidance only", nullable=True,
                                       min=0)
    guidance_interval: list[float] | None = key(list, None, "[low, high]: guidance (classifier-free and contrast) only at "
                                                "the sampler steps whose noise level sigma lies in (low, high] (the "
                                                "pipeline's guidance_interval), in the evaluate stage's generation; None: every step", nullable=True,
                                                item_type=_NUM)


#: The recipe's sections, in order: name -> dataclass.
SECTIONS: dict[str, type] = {"run": RunConfig, "data": DataConfig, "captions": CaptionsConfig, "tclip": TClipConfig, "vae": VAEConfig, "unet": UNetConfig, "train": TrainConfig, "scheduler": SchedulerConfig, "eval": EvalConfig}

#: Every key of every section: section -> key -> :class:`Field`, derived from :data:`SECTIONS`.
SCHEMA: dict[str, dict[str, Field]] = {sec: {f.name: f.metadata["schema"] for f in dataclasses.fields(cls)}
                                       for sec, cls in SECTIONS.items()}


@dataclass
class RecipeConfig:
    """The whole recipe config, typed: one dataclass per section (``cfg.train.max_train_steps``). The loader works
    on the plain nested dict (:func:`load_config`, what run folders store as ``config.yaml``); :meth:`from_dict`
    and :meth:`to_dict` convert, and :func:`load_recipe_config` loads and validates straight into this view."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    captions: CaptionsConfig = dataclasses.field(default_factory=CaptionsConfig)
    tclip: TClipConfig = dataclasses.field(default_factory=TClipConfig)
    vae: VAEConfig = dataclasses.field(default_factory=VAEConfig)
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, cfg: dict[str, dict[str, Any]]) -> "RecipeConfig":
        """The typed view of a validated config dict (:func:`load_config`); the values are copied."""
        return cls(**{sec: SECTIONS[sec](**copy.deepcopy(cfg[sec])) for sec in SECTIONS})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The plain nested dict (as :func:`load_config` returns and ``config.yaml`` stores it)."""
        return dataclasses.asdict(self)


def load_recipe_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RecipeConfig:
    """:func:`load_config` (defaults, YAML file, ``key=value`` overrides; every key checked) as a :class:`RecipeConfig`."""
    return RecipeConfig.from_dict(load_config(path, overrides))



def defaults() -> dict[str, dict[str, Any]]:
    """The default config (the CPU recipe) as a fresh nested dict."""
    return RecipeConfig().to_dict()


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_value(key: str, f: Field, value: Any, where: str) -> Any:
    if value is None:
        if f.nullable:
            return None
        raise ConfigError(f"{where}config key '{key}': null is not allowed (expected {_tname(f.type)})")
    types = f.type if isinstance(f.type, tuple) else (f.type,)
    # bool is an int subclass in Python; a YAML `true` must not pass as a number (and 1 not as a bool).
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise ConfigError(f"{where}config key '{key}': expected {_tname(f.type)}, got {type(value).__name__} {value!r}")
    if f.choices is not None and value not in f.choices:
        raise ConfigError(f"{where}config key '{key}': {value!r} is not one of {list(f.choices)}")
    if f.min is not None and not isinstance(value, (list, dict, str)) and value < f.min:
        raise ConfigError(f"{where}config key '{key}': {value!r} is below the minimum {f.min}")
    if f.item_type is not None:
        for i, item in enumerate(value):
            if not isinstance(item, f.item_type) or isinstance(item, bool) and f.item_type is not bool:
                raise ConfigError(f"{where}config key '{key}[{i}]': expected {_tname(f.item_type)}, got {item!r}")
    return copy.deepcopy(value)


def _tname(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__


def _legacy_tclip_args(argv: Any, where: str) -> dict:
    """The former ``tclip.args`` (an argv list for python -m tclip.train) as ``tclip.config`` + ``tclip.train``."""
    import logging

    flags = {"--base-steps": ("base_stage", "steps"), "--adapter-steps": ("adapter_stage", "steps"),
             "--lora-r": ("lora", "r")}
    out: dict[str, Any] = {"config": "recipe-cpu", "train": {}}
    args = list(argv) if isinstance(argv, list) else None
    try:
        while args:
            flag, value = args.pop(0), args.pop(0)
            if flag == "--config":
                out["config"] = value
            elif flag == "--batch-size":
                for stage in ("base_stage", "adapter_stage"):
                    out["train"].setdefault(stage, {})["batch_size"] = int(value)
            elif flag in flags:
                section, key = flags[flag]
                out["train"].setdefault(section, {})[key] = int(value)
            else:
                raise ValueError(flag)
    except (IndexError, ValueError):
        args = None
    if args is None:
        raise ConfigError(f"{where}config key 'tclip.args' ({argv!r}) is gone and this one cannot be translated: name "
                          "the training config in tclip.config and change its keys in tclip.train, e.g. tclip: "
                          "{config: tiny, train: {base_stage: {steps: 400}}}")
    logging.getLogger("thermgen.train").warning("%sconfig key 'tclip.args' is gone; read as tclip.config=%s, "
                                                "tclip.train=%s", where, out["config"], out["train"])
    return out


def merge(base: dict, update: dict, where: str = "") -> dict:
    """Validate ``update`` (nested dict) against :data:`SCHEMA` and merge it into a copy of ``base``."""
    out = copy.deepcopy(base)
    if not isinstance(update, dict):
        raise ConfigError(f"{where}the config must be a mapping of sections, got {type(update).__name__}")
    for sec, vals in update.items():
        if sec not in SCHEMA:
            raise ConfigError(f"{where}unknown config section '{sec}'{_suggest(str(sec), SCHEMA)}; "
                              f"sections: {sorted(SCHEMA)}")
        if vals is None:
            continue
        if not isinstance(vals, dict):
            raise ConfigError(f"{where}config section '{sec}' must be a mapping, got {type(vals).__name__}")
        for k, v in vals.items():
            if (sec, k) == ("tclip", "args"):  # a run folder's config.yaml from before tclip.config / tclip.train
                out["tclip"].update(_legacy_tclip_args(v, where))
                continue
            if k not in SCHEMA[sec]:
                raise ConfigError(f"{where}unknown config key '{sec}.{k}'{_suggest(str(k), SCHEMA[sec])}")
            out[sec][k] = _check_value(f"{sec}.{k}", SCHEMA[sec][k], v, where)
    _check_consistency(out, where)
    return out


def tclip_train_config(cfg: dict, where: str = "") -> dict:
    """The T-CLIP stage's training config: ``tclip.config`` with ``tclip.train`` merged in (tclip.train's
    ``load_train_config``); a bad name, key or value raises ConfigError naming ``tclip.config`` / ``tclip.train``."""
    from tclip.train import load_train_config

    t = cfg["tclip"]
    try:
        return load_train_config(t["config"], t["train"] or None)
    except FileNotFoundError as e:
        raise ConfigError(f"{where}config key 'tclip.config': {e}") from None
    except ValueError as e:
        raise ConfigError(f"{where}config key 'tclip.train': {e}") from None


def vae_train_config(cfg: dict) -> dict:
    """The ``vae.train`` settings with the recipe's shared keys (resolution, seed, mixed precision, pretrained)
    filled in: what the VAE stage trains with."""
    v = dict(cfg["vae"]["train"])
    v.setdefault("resolution", cfg["train"]["resolution"])
    v.setdefault("seed", cfg["run"]["seed"])
    v.setdefault("center_crop", False)
    v.setdefault("mixed_precision", cfg["train"]["mixed_precision"])
    if cfg["vae"]["pretrained"]:
        v["pretrained"] = cfg["vae"]["pretrained"]
    if v["center_crop"]:
        raise ConfigError("config key 'vae.train.center_crop': the recipe squashes whole frames to train.resolution for "
                          "every stage (the UNet sees what the VAE learned); it must be false")
    if v["resolution"] != cfg["train"]["resolution"]:
        raise ConfigError(f"config key 'vae.train.resolution' ({v['resolution']}) must equal train.resolution "
                          f"({cfg['train']['resolution']})")
    return v


def check_stage_settings(cfg: dict, where: str = "") -> None:
    """Each training stage's own settings, checked by that stage's loader when the config loads (not hours later,
    when the stage starts): ``tclip.config`` + ``tclip.train``, ``vae.train``, and that every global batch splits
    evenly over ``run.num_processes``."""
    n = cfg["run"]["num_processes"]
    if cfg["tclip"]["dir"] is None:
        t = tclip_train_config(cfg, where)
        for stage in ("base_stage", "adapter_stage"):
            if t[stage]["batch_size"] % n:
                raise ConfigError(f"{where}config key 'tclip.train': {stage}.batch_size {t[stage]['batch_size']} is not "
                                  f"divisible by run.num_processes {n}")
    from thermgen.train.vae import validate_vae_config

    try:
        v = validate_vae_config(vae_train_config(cfg), prefix="vae.train.")
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None
    except ValueError as e:
        raise ConfigError(f"{where}{e}") from None
    if v["steps"] and v["kind"] != "patch" and v["batch_size"] % n:
        raise ConfigError(f"{where}config key 'vae.train': batch_size {v['batch_size']} is not divisible by "
                          f"run.num_processes {n}")
    if cfg["train"]["train_batch_size"] % n:
        raise ConfigError(f"{where}config key 'train.train_batch_size' ({cfg['train']['train_batch_size']}) is not "
                          f"divisible by run.num_processes {n}")


def _check_consistency(cfg: dict, where: str) -> None:
    u = cfg["unet"]
    if len(u["down_block_types"]) != len(u["block_out_channels"]):
        raise ConfigError(f"{where}config key 'unet.down_block_types': {len(u['down_block_types'])} blocks but "
                          f"unet.block_out_channels has {len(u['block_out_channels'])}")
    if len(u["up_block_types"]) != len(u["block_out_channels"]):
        raise ConfigError(f"{where}config key 'unet.up_block_types': {len(u['up_block_types'])} blocks but "
                          f"unet.block_out_channels has {len(u['block_out_channels'])}")
    for key in ("attention_head_dim", "transformer_layers_per_block"):
        v = u[key]
        vals = v if isinstance(v, list) else [v]
        if isinstance(v, list) and len(v) != len(u["block_out_channels"]):
            raise ConfigError(f"{where}config key 'unet.{key}': {len(v)} entries but unet.block_out_channels has "
                              f"{len(u['block_out_channels'])}")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in vals):
            raise ConfigError(f"{where}config key 'unet.{key}': expected positive integers, got {v!r}")
    for c in u["block_out_channels"]:
        if c % u["norm_num_groups"]:
            raise ConfigError(f"{where}config key 'unet.block_out_channels': {c} is not divisible by "
                              f"unet.norm_num_groups={u['norm_num_groups']}")
    if cfg["data"]["source"] != "synthetic" and not cfg["data"]["root"]:
        raise ConfigError(f"{where}config key 'data.root' is required for data.source={cfg['data']['source']!r}")
    t = cfg["train"]
    if not t["beta_start"] < t["beta_end"] < 1:
        raise ConfigError(f"{where}config keys 'train.beta_start'/'train.beta_end': need beta_start < beta_end < 1, "
                          f"got {t['beta_start']!r} / {t['beta_end']!r}")
    # With unet.pretrained the schedule may come from the SD folder instead; thermgen.train.unet.resolve_noise_schedule
    # repeats this check on the schedule actually used.
    if (t["prediction_type"] == "epsilon" and cfg["scheduler"]["beta_schedule"] == "squaredcos_cap_v2"
            and not cfg["unet"]["pretrained"]):
        # The cosine schedule's last step keeps sqrt(alpha_bar) = 5e-5 of the signal, so a sampler's clean-latent
        # estimate (x_t - sigma * eps) / sqrt(alpha_bar) multiplies the UNet's epsilon error by ~2e4 at the first
        # step: samples saturate into blobs however long the UNet trains (pixel-space DDPM hides this by clipping
        # to [-1, 1], which latents do not allow). v-prediction estimates the clean latent without that division.
        raise ConfigError(f"{where}config key 'train.prediction_type': 'epsilon' with scheduler.beta_schedule="
                          "'squaredcos_cap_v2' makes the sampler divide the UNet's error by sqrt(alpha_bar) = 5e-5 at "
                          "the first step; use train.prediction_type=v_prediction (or beta_schedule=scaled_linear)")
    gi = cfg["eval"]["guidance_interval"]
    if gi is not None and not (len(gi) == 2 and all(math.isfinite(v) for v in gi) and 0 <= gi[0] < gi[1]):
        raise ConfigError(f"{where}config key 'eval.guidance_interval': need [low, high] with 0 <= low < high, "
                          f"got {gi!r}")
    if cfg["train"]["caption_variants"] and not cfg["captions"]["variants"]:
        raise ConfigError(f"{where}config key 'train.caption_variants': needs captions.variants > 0 (the manifest's "
                          "other phrasings of each caption)")
    if cfg["train"]["caption_dropout"] > 1:
        raise ConfigError(f"{where}config key 'train.caption_dropout': {cfg['train']['caption_dropout']} is above 1")
    if cfg["unet"]["fusion_alpha"] is not None and cfg["unet"]["fusion_alpha"] > 1:
        raise ConfigError(f"{where}config key 'unet.fusion_alpha': {cfg['unet']['fusion_alpha']} is above 1")


#: Keys whose value is a stage's own settings (a mapping checked by that stage's loader): ``key.sub[.sub]=value``
#: overrides change one setting inside them and keep the rest.
NESTED_KEYS = (("vae", "train"), ("tclip", "train"))


def _nested_default(parts: list[str]) -> Any:
    """The default of a stage setting ``vae.train.<key>`` / ``tclip.train.<a>.<b>`` (None when unknown)."""
    if parts[0] == "vae":
        from thermgen.train.vae import VAE_DEFAULTS as node
    else:
        from tclip.train import DEFAULT_CONFIG as node
    for p in parts[2:]:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"train.max_train_steps=50"`` -> ``("train", "max_train_steps", 50)``; the value is parsed as YAML.

    Inside the mapping-valued keys of :data:`NESTED_KEYS` a longer path sets one setting:
    ``"vae.train.steps=200"`` -> ``("vae", "train", {"steps": 200})`` and ``"tclip.train.base_stage.steps=400"`` ->
    ``("tclip", "train", {"base_stage": {"steps": 400}})``, merged into that key's current mapping by
    :func:`load_config` (the settings are checked by the stage's loader when the config loads)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.max_train_steps=50")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if len(parts) > 2 and tuple(parts[:2]) in NESTED_KEYS and all(parts[2:]):
        try:
            value = yaml.safe_load(raw) if raw.strip() != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {text!r}: config key '{key}': value is not valid YAML ({e})") from None
        if value is not None and not isinstance(value, str) and isinstance(_nested_default(parts), str):
            value = raw.strip()  # a text setting given a YAML bool or number (mixed_precision=no) stays text
        for sub in reversed(parts[2:]):
            value = {sub: value}
        return parts[0], parts[1], value
    if key.count(".") != 1:
        nested = " or " + " / ".join(f"{a}.{b}.<setting>" for a, b in NESTED_KEYS)
        raise ConfigError(f"override {text!r}: key '{key}' must be section.key, e.g. train.learning_rate{nested}")
    sec, name = key.split(".")
    if key == "tclip.args":
        raise ConfigError(f"override {text!r}: tclip.args is gone: name the training config in tclip.config and change "
                          "its keys in tclip.train, e.g. tclip.config=tiny 'tclip.train={base_stage: {steps: 400}}'")
    if sec not in SCHEMA:
        raise ConfigError(f"override {text!r}: unknown config section '{sec}'{_suggest(sec, SCHEMA)}")
    if name not in SCHEMA[sec]:
        raise ConfigError(f"override {text!r}: unknown config key '{key}'{_suggest(name, SCHEMA[sec])}")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: config key '{key}': value is not valid YAML ({e})") from None
    # A float key given as an integer literal (lr=1) is a float; a string key given a number stays a string.
    if SCHEMA[sec][name].type is str and value is not None and not isinstance(value, str):
        value = raw.strip()
    return sec, name, value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The validated config: defaults, then the YAML file (if any), then ``key=value`` overrides.

    A YAML file may name a parent with a top-level ``base: other.yaml`` (relative to the file).
    Raises ConfigError naming the file and the key for any unknown key, wrong type or bad value.
    """
    cfg = defaults()
    if path is not None:
        cfg = _load_file(Path(path), cfg, seen=())
    update: dict[str, dict[str, Any]] = {}
    for text in overrides or []:
        sec, name, value = parse_override(text)
        _check_value(f"{sec}.{name}", SCHEMA[sec][name], value, f"override {text!r}: ")
        if (sec, name) in NESTED_KEYS and text.split("=", 1)[0].strip().count(".") > 1:
            value = _deep_merge(update.get(sec, {}).get(name, cfg[sec][name]), value)
        update.setdefault(sec, {})[name] = value
    # Applied together, so that e.g. data.source and data.root may be given in either order.
    cfg = merge(cfg, update, where="overrides: ") if update else cfg
    # After every layer, so that a file may set vae.train and an override vae.pretrained (or tclip.dir)
    check_stage_settings(cfg, f"{path}{' + overrides' if update else ''}: " if path is not None
                         else ("overrides: " if update else ""))
    return cfg


def _load_file(path: Path, cfg: dict, seen: tuple) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to this file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections")
    data = dict(data)
    base = data.pop("base", None)
    if base is not None:
        cfg = _load_file((path.parent / base), cfg, seen + (path.resolve(),))
    return merge(cfg, data, where=f"{path}: ")


def _deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_hash(*parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts (a stage's config plus its inputs' hashes)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def describe_keys() -> str:
    """Every key with its default and meaning, for ``--list-keys``."""
    from tclip.scaffold import flat_settings
    from tclip.train import load_train_config

    from thermgen.train.vae import validate_vae_config

    recipe_filled = ("resolution", "seed", "center_crop", "mixed_precision", "pretrained")
    nested = {
        ("vae", "train"): ("the VAE stage's settings as the default recipe resolves them (`*`: taken from the recipe's "
                           "own keys: train.resolution, run.seed, train.mixed_precision, vae.pretrained)",
                           flat_settings(validate_vae_config(vae_train_config(defaults())), "vae.train").items()),
        ("tclip", "train"): (f"the T-CLIP training config's settings, here those of tclip.config's default "
                             f"{SCHEMA['tclip']['config'].default!r}", flat_settings(load_train_config(
                                 SCHEMA["tclip"]["config"].default), "tclip.train").items()),
    }
    lines = []
    for sec, fields in SCHEMA.items():
        lines.append(f"[{sec}]")
        for k, f in fields.items():
            extra = f" (one of {list(f.choices)})" if f.choices else ""
            lines.append(f"  {sec}.{k} = {json.dumps(f.default)}{extra}\n      {f.help}")
            if (sec, k) in nested:
                what, keys = nested[(sec, k)]
                lines.append(f"      set one with {sec}.{k}.<setting>=VALUE (nested: a.b=VALUE); {what}:")
                lines += [f"        {name}{'*' if name.split('.')[2] in recipe_filled and sec == 'vae' else ''} = "
                          f"{json.dumps(v, default=str)}" for name, v in keys]
    return "\n".join(lines)


def dump_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
