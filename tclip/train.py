"""Train T-CLIP on a manifest: `python -m tclip.train --manifest M --out DIR`.

Stages (each skipped when already complete in DIR, so `--resume` continues where a run stopped):

1. base   only when the base has no pretrained weights (`--base ARCH`, the offline default): the
          whole open_clip model is trained from scratch on the manifest's (image, caption) pairs,
          each step drawing the global or the fine caption of every image at random.
2. global the "global" LoRA adapter on the frozen base, with the global captions;
3. fine   the "fine" LoRA adapter on the same frozen base, with the fine captions (trained alone, not
          initialised from the global one: the paper found that collapses).

Each stage: symmetric InfoNCE with a learnable temperature, AdamW (no weight decay on gains, biases
and the temperature) with a cosine schedule and linear warm-up, gradient-norm clipping, fp16 mixed
precision on CUDA, all under `accelerate` (the same code on a CPU, one GPU or many:
`accelerate launch -m tclip.train ...` or `torchrun --nproc_per_node N -m tclip.train ...`).
Checkpoints (`accelerator.save_state`) every `checkpoint_every` steps with rotation; a progress bar,
`DIR/logs/loss.csv` and `DIR/logs/loss.png`. Deterministic for a seed on CPU.

DIR becomes a T-CLIP folder (`tclip.load(DIR)`), plus `DIR/logs/` and `DIR/checkpoints/`.
Augmentation (config key `augment`), chosen to keep captions true: `caption_variants` draws, per
image and step, one of the manifest's other phrasings of the same facts (`thermgen.caption --variants
K`; no-op for manifests without them); `hflip` mirrors the image and swaps the words of `swap_words`
(left <-> right) in its captions, which is right for captions that name positions in the frame, as
IR-Cap's do; `shift` translates the image by up to that fraction of its size (at most 0.1; edge pixels
repeated), so an object near the edge of a 3x3 grid cell may cross into the next one: keep it small.
Crops, rotations and intensity jitter are not offered: they would falsify counts, top/bottom
positions and the stated contrast.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .data import MIRROR_WORDS, read_manifest, split_images, swap_words
from .loss import ContrastiveLoss
from .model import ADAPTERS, DEFAULT_LORA, TCLIP, build_base, build_tokenizer, parse_base_spec, preprocess_thermal
from .scaffold import Checkpointer, CSVTracker, csv_tracker, make_trackers, plot_csv_curves, tracker_config

__all__ = ["main", "train", "load_train_config", "result_settings", "run_finished", "DEFAULT_CONFIG", "TRAIN_CONFIG_DIR"]

logger = logging.getLogger("tclip.train")

TRAIN_CONFIG_DIR = Path(__file__).parent / "train_configs"
STATE_FILE = "train_state.json"

_STAGE_DEFAULTS = {
    "steps": 200,
    "batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 1e-3,
    "warmup": 100,
    "grad_clip": 1.0,
}
DEFAULT_CONFIG: dict = {
    "base": "tclip-cpu-rn",
    "lora": dict(DEFAULT_LORA),
    "fusion_alpha": 0.8,
    "init_temperature": 0.07,
    # CPU-sized stage settings (as in train_configs/hituav-cpu.json, chosen on HIT-UAV val); the paper's
    # GPU setting is train_configs/paper-vitb16.json (lr 2e-3, wd 1e-3, 100 warm-up, batch 128, 10k steps).
    "base_stage": {**_STAGE_DEFAULTS, "steps": 3000, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.1, "warmup": 150},
    "adapter_stage": {**_STAGE_DEFAULTS, "steps": 100, "batch_size": 64, "lr": 5e-3, "warmup": 10},
    # Caption-preserving augmentation (module docstring); defaults chosen on HIT-UAV val.
    "augment": {"caption_variants": True, "hflip": True, "swap_words": [list(p) for p in MIRROR_WORDS], "shift": 0.05},
    "mixed_precision": "auto",
    "checkpoint_every": 100,
    "keep_checkpoints": 2,
    "log_every": 5,
    "image_workers": 2,
    # Images are decoded once into memory when the split fits in this many MB, else read from disk for every
    # batch by image_workers DataLoader processes (0: always stream). Either way the same values.
    "image_cache_mb": 4096,
}
#: Keys that change speed and memory, never the result: a --resume may change them.
RUNTIME_KEYS = ("image_workers", "image_cache_mb")
#: Keys added after runs were made, at the value that reproduces those runs: left out of `result_settings` when at
#: it, so that a run identified by its settings before the key existed stays complete.
LATER_DEFAULTS = {"lora": {"convs": False}}


def result_settings(cfg: dict) -> dict:
    """The settings that identify what a training config produces (a run's hash, a bench's stamp): the config
    without `RUNTIME_KEYS`, and without the `LATER_DEFAULTS` keys that are at their default."""
    out = {k: copy.deepcopy(v) for k, v in cfg.items() if k not in RUNTIME_KEYS}
    for section, keys in LATER_DEFAULTS.items():
        for key, default in keys.items():
            if isinstance(out.get(section), dict) and key in out[section] and out[section][key] == default:
                del out[section][key]
    return out


# ---------------------------------------------------------------------------------------------- config
def _merge(base: dict, override: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise ValueError(f"{where}: unknown key {key!r} (known: {sorted(base)})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: key {key!r} must be a mapping, got {type(value).__name__}")
            out[key] = _merge(base[key], value, f"{where}.{key}")
        else:
            _check_type(base[key], value, f"{where}.{key}")
            out[key] = value
    return out


#: Keys whose value may also be null (their default is not), and keys that take any number (their default is an int).
NULLABLE_KEYS = ("image_cache_mb",)
NUMBER_KEYS = ("image_cache_mb",)


def _check_type(default, value, where: str) -> None:
    """A setting keeps its default's type (an int is a float too; a default of null takes anything)."""
    key = where.rsplit(".", 1)[-1]
    if default is None or (value is None and key in NULLABLE_KEYS):
        return
    if key in NUMBER_KEYS:
        default = float(default)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{where} must be {type(default).__name__}, like its default {default!r}; got {value!r}")


def _check_stage(cfg: dict, where: str) -> None:
    for key in ("steps", "batch_size", "warmup"):
        if not isinstance(cfg[key], int) or cfg[key] < (1 if key == "batch_size" else 0):
            raise ValueError(f"{where}.{key} must be a {'positive' if key == 'batch_size' else 'non-negative'} integer, got {cfg[key]!r}")
    for key in ("lr", "weight_decay", "grad_clip"):
        if not isinstance(cfg[key], (int, float)) or cfg[key] < 0:
            raise ValueError(f"{where}.{key} must be a non-negative number, got {cfg[key]!r}")


def load_train_config(path_or_name: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The training config: defaults <- a JSON/YAML file (or a name in tclip/train_configs) <- overrides.

    Unknown keys and bad values raise `ValueError` naming the key.
    """
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if path_or_name is not None:
        path = Path(path_or_name)
        if not path.is_file():
            named = TRAIN_CONFIG_DIR / f"{path_or_name}.json"
            if not named.is_file():
                known = sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.json"))
                raise FileNotFoundError(f"training config {path_or_name!r} not found (a file, or one of {known})")
            path = named
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config must be a mapping")
        cfg = _merge(cfg, data, str(path))
    if overrides:
        cfg = _merge(cfg, overrides, "override")
    for stage in ("base_stage", "adapter_stage"):
        _check_stage(cfg[stage], stage)
    if not 0.0 <= float(cfg["fusion_alpha"]) <= 1.0:
        raise ValueError(f"fusion_alpha must be in [0, 1], got {cfg['fusion_alpha']!r}")
    if cfg["mixed_precision"] not in ("auto", "no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be auto|no|fp16|bf16, got {cfg['mixed_precision']!r}")
    aug = cfg["augment"]
    for key in ("caption_variants", "hflip"):
        if not isinstance(aug[key], bool):
            raise ValueError(f"augment.{key} must be true or false, got {aug[key]!r}")
    if not isinstance(aug["shift"], (int, float)) or isinstance(aug["shift"], bool) or not 0.0 <= aug["shift"] <= 0.1:
        raise ValueError(f"augment.shift must be a number in [0, 0.1], got {aug['shift']!r}")
    pairs = aug["swap_words"]
    if not isinstance(pairs, list) or not all(
        isinstance(pr, list) and len(pr) == 2 and all(isinstance(w, str) and re.fullmatch(r"\w+", w) for w in pr) for pr in pairs
    ):
        raise ValueError(f"augment.swap_words must be a list of [word, word] pairs, got {pairs!r}")
    for key in ("checkpoint_every", "keep_checkpoints", "log_every"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if not isinstance(cfg["image_workers"], int) or isinstance(cfg["image_workers"], bool) or cfg["image_workers"] < 0:
        raise ValueError(f"image_workers must be a non-negative integer, got {cfg['image_workers']!r}")
    mb = cfg["image_cache_mb"]
    if mb is not None and (not isinstance(mb, (int, float)) or isinstance(mb, bool) or mb < 0):
        raise ValueError(f"image_cache_mb must be a non-negative number of MB or null (always in memory), got {mb!r}")
    return cfg


# ---------------------------------------------------------------------------------------------- data
class _PairData(torch.utils.data.Dataset):
    """Pairs: image (1, S, S), tokens (2 kinds, 2 flips, V variants, L), variant counts (2,).

    kinds: 0 global, 1 fine; flips: 0 as written, 1 mirrored (swapped words); variant 0 is the manifest's
    caption, the rest its `caption_variants` (slots past a record's own count repeat its first caption).
    `images` is a preloaded (N, 1, S, S) tensor or a `tclip.data.ThermalImages` that reads each file when
    its pair is drawn (`streamed`).
    """

    def __init__(self, images, tokens: torch.Tensor, counts: torch.Tensor):
        self.images, self.tokens, self.counts = images, tokens, counts
        self.streamed = not isinstance(images, torch.Tensor)

    @classmethod
    def build(cls, images, records, tokenizer, augment: dict) -> "_PairData":
        kinds = ("global", "fine")
        caps = [[list(r.captions(k)) if augment["caption_variants"] else [r.caption(k)] for k in kinds] for r in records]
        counts = torch.tensor([[len(c) for c in per] for per in caps], dtype=torch.long)
        v = int(counts.max()) if len(caps) else 1
        flat = []
        for per in caps:
            for c in per:
                padded = c + [c[0]] * (v - len(c))
                flat += padded
                flat += [swap_words(t, augment["swap_words"]) for t in padded] if augment["hflip"] else padded
        # order: record, kind, flip, variant; each distinct text is tokenised once
        unique = list(dict.fromkeys(flat))
        index = {t: i for i, t in enumerate(unique)}
        tok = tokenizer(unique)[torch.tensor([index[t] for t in flat], dtype=torch.long)]
        tok = tok.view(len(caps), 2, 2, v, tok.shape[-1])
        return cls(images, tok, counts)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.tokens[i], self.counts[i]


def _augment_batch(pixels, tokens, counts, draw, caption: str, augment: dict):
    """Pick each pair's caption (kind, variant, mirrored?) and transform its image; `draw` is (B, 5) uniform."""
    b = pixels.shape[0]
    dev = pixels.device
    draw = draw.to(dev)
    if caption == "global":
        kind = torch.zeros(b, dtype=torch.long, device=dev)
    elif caption == "fine":
        kind = torch.ones(b, dtype=torch.long, device=dev)
    else:
        kind = (draw[:, 0] >= 0.5).long()
    rows = torch.arange(b, device=dev)
    n = counts.to(dev)[rows, kind]
    variant = (draw[:, 1] * n).long().clamp_(max=tokens.shape[3] - 1) if augment["caption_variants"] else torch.zeros_like(kind)
    flip = (draw[:, 2] < 0.5) if augment["hflip"] else torch.zeros(b, dtype=torch.bool, device=dev)
    tok = tokens[rows, kind, flip.long(), variant]
    if augment["hflip"]:
        pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    if augment["shift"] > 0:
        h, w = pixels.shape[-2:]
        ph, pw = max(1, round(augment["shift"] * h)), max(1, round(augment["shift"] * w))
        padded = nn.functional.pad(pixels, (pw, pw, ph, ph), mode="replicate")
        dy = ((draw[:, 3] * (2 * ph + 1)).long().clamp_(max=2 * ph)).tolist()
        dx = ((draw[:, 4] * (2 * pw + 1)).long().clamp_(max=2 * pw)).tolist()
        pixels = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    return pixels, tok


class _TrainStep(nn.Module):
    """What accelerate wraps: the model and the loss (whose temperature is trained with the model)."""

    def __init__(self, model: nn.Module, loss: ContrastiveLoss, encode):
        super().__init__()
        self.model = model
        self.loss = loss
        self._encode = encode

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        img, txt = self._encode(self.model, pixels, tokens)
        return self.loss(img, txt)


def _plain_encoder(base_info: dict):
    """Encoder for the base stage: the plain open_clip model on raw thermal batches."""
    mean = torch.tensor(base_info["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(base_info["std"]).view(1, 3, 1, 1)
    size = tuple(base_info["image_size"])

    def encode(model, images, tokens):
        pixels = preprocess_thermal(images, size, mean.to(images.device), std.to(images.device))
        return (
            nn.functional.normalize(model.encode_image(pixels), dim=-1),
            nn.functional.normalize(model.encode_text(tokens), dim=-1),
        )

    return encode


def _adapter_encoder(name: str):
    def encode(model, images, tokens):
        return model(model.preprocess(images), tokens, name)

    return encode


def _param_groups(params: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """open_clip's rule: no weight decay on gains, biases, embeddings' 1-d params and the temperature."""
    decay = [p for n, p in params if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "logit_scale" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------- stage loop
@dataclass
class _Ctx:
    accelerator: object
    out: Path
    cfg: dict
    seed: int
    progress: bool
    log_rows: list


def _run_stage(ctx: _Ctx, stage: str, model: nn.Module, encode, dataset: _PairData, caption: str, stage_cfg: dict, resume: bool) -> float:
    """Train one stage; returns the final temperature scale. `caption`: "global", "fine" or "random"."""
    from accelerate.utils import set_seed
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from tqdm.auto import tqdm

    acc = ctx.accelerator
    set_seed(ctx.seed + {"base": 0, "global": 1, "fine": 2}[stage], device_specific=True)
    loss_fn = ContrastiveLoss(
        init_temperature=float(ctx.cfg["init_temperature"]), rank=acc.process_index, world_size=acc.num_processes
    )
    step_module = _TrainStep(model, loss_fn, encode)
    params = [(n, p) for n, p in step_module.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for _, p in params)
    optimizer = torch.optim.AdamW(_param_groups(params, stage_cfg["weight_decay"]), lr=stage_cfg["lr"], betas=(0.9, 0.98), eps=1e-6)
    steps = stage_cfg["steps"]
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(stage_cfg["warmup"], steps), max(steps, 1))
    if stage_cfg["batch_size"] % acc.num_processes:
        key = "base_stage" if stage == "base" else "adapter_stage"
        raise ValueError(f"{key}.batch_size {stage_cfg['batch_size']} is the global batch and must be divisible "
                         f"by the {acc.num_processes} processes")
    per_rank = stage_cfg["batch_size"] // acc.num_processes
    if len(dataset) < per_rank * acc.num_processes:
        raise ValueError(
            f"stage {stage}: {len(dataset)} training pairs are fewer than one batch "
            f"({per_rank} x {acc.num_processes} processes); lower batch_size"
        )
    gen = torch.Generator().manual_seed(ctx.seed)
    # Streamed images (tclip.data.ThermalImages) are read by worker processes; the order comes from `gen` either way.
    workers = int(ctx.cfg["image_workers"]) if dataset.streamed else 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=per_rank * acc.num_processes, shuffle=True, drop_last=True,
                                         generator=gen,
                                         num_workers=workers, persistent_workers=workers > 0)
    step_module, optimizer, loader, scheduler = acc.prepare(step_module, optimizer, loader, scheduler)

    checkpoints = Checkpointer(acc, ctx.out / "checkpoints" / stage, prefix="step-", limit=ctx.cfg["keep_checkpoints"])
    start = 0
    found = checkpoints.find("latest" if resume else None)
    if found is not None:
        start, _, _ = checkpoints.load(found)
        logger.info("stage %s: resumed from %s", stage, found)
    if acc.is_main_process:
        # rows of this stage past its checkpoint belong to the interrupted tail: the resumed run writes them again
        csv_tracker(acc).drop_rows(lambda r: r.get("stage") == stage and r["step"] > start)
        logger.info("stage %s: %d steps, %d trainable parameters, batch %d x %d processes", stage, steps, n_trainable, per_rank, acc.num_processes)

    # The caption/augmentation draws are made for the global batch and sliced to this process's share (the
    # prepared loader splits each global batch into num_processes consecutive shares), so N processes train on
    # what one process does.
    caption_gen = torch.Generator().manual_seed(ctx.seed * 7919)
    world, rank = acc.num_processes, acc.process_index
    epoch_len = len(loader)
    epoch, skip = divmod(start, epoch_len)
    for _ in range(start):  # keep the caption/augmentation draws identical to an uninterrupted run
        torch.rand(per_rank * world, 5, generator=caption_gen)
    bar = tqdm(total=steps, initial=start, desc=f"tclip {stage}", disable=not (ctx.progress and acc.is_local_main_process))
    step, t0 = start, time.time()
    step_module.train()
    batches = loader
    try:
        while step < steps:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            batches = acc.skip_first_batches(loader, skip) if skip else loader
            skip = 0
            for pixels, tok_all, counts in batches:
                draw = torch.rand(per_rank * world, 5, generator=caption_gen)[rank * per_rank:][: pixels.shape[0]]
                pixels, tokens = _augment_batch(pixels, tok_all, counts, draw, caption, ctx.cfg["augment"])
                with acc.autocast():
                    loss = step_module(pixels, tokens)
                acc.backward(loss)
                if acc.sync_gradients and stage_cfg["grad_clip"] > 0:
                    acc.clip_grad_norm_([p for _, p in params], stage_cfg["grad_clip"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss_value = acc.reduce(loss.detach(), reduction="mean").item()
                if acc.is_main_process and (step % ctx.cfg["log_every"] == 0 or step == steps):
                    scale = acc.unwrap_model(step_module).loss.scale.item()
                    ctx.log_rows.append(
                        {"stage": stage, "step": step, "loss": round(loss_value, 6), "lr": scheduler.get_last_lr()[0], "scale": round(scale, 4), "seconds": round(time.time() - t0, 2)}
                    )
                    row = {k: v for k, v in ctx.log_rows[-1].items() if k != "step"}
                    for tracker in acc.trackers:  # the CSV keeps a stage column; other trackers get one curve per stage
                        tracker.log(row if isinstance(tracker, CSVTracker) else
                                    {f"{stage}/{k}": v for k, v in row.items() if k != "stage"}, step=step)
                bar.set_postfix(loss=f"{loss_value:.3f}")
                bar.update(1)
                if step % ctx.cfg["checkpoint_every"] == 0 and step < steps:
                    checkpoints.save(step)
                if step >= steps:
                    break
            epoch += 1
    finally:
        # Left early (the last step, or an exception), a prepared loader never runs its own end(): accelerate's
        # process-wide GradientState would keep it as the active loader of later stages in this process.
        for dl in {id(loader): loader, id(batches): batches}.values():
            getattr(dl, "end", lambda: None)()
    bar.close()
    final_scale = acc.unwrap_model(step_module).loss.scale.item()
    acc.wait_for_everyone()
    acc.free_memory()
    return final_scale


def plot_loss(csv_path: Path, png_path: Path) -> None:
    """Loss curve PNG (one line per stage) from the loss CSV."""
    plot_csv_curves(csv_path, png_path, y="loss", by="stage", title="T-CLIP training loss", ylabel="InfoNCE loss")


# ---------------------------------------------------------------------------------------------- driver
def _read_state(out: Path) -> dict:
    path = out / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {"completed": []}


def run_finished(out: str | Path) -> bool:
    """Whether `out` holds a finished `tclip.train` run (every stage done)."""
    return bool(_read_state(Path(out)).get("finished"))


def _write_state(out: Path, state: dict) -> None:
    (out / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def train(
    manifest: str | Path,
    out: str | Path,
    split: str = "train",
    base: str | None = None,
    adapter: str = "both",
    config: dict | None = None,
    seed: int = 0,
    resume: bool = False,
    cpu: bool = False,
    progress: bool = True,
    report_to: str = "csv",
) -> Path:
    """Run the stages (module docstring) and write the T-CLIP folder `out`. Returns `out`.

    The loss log goes through accelerate's trackers (:mod:`tclip.scaffold`): ``out/logs/loss.csv`` always, and
    TensorBoard too with ``report_to="tensorboard"``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg = copy.deepcopy(config) if config is not None else load_train_config()
    if base is not None:
        cfg["base"] = base
    if adapter not in ("global", "fine", "both"):
        raise ValueError(f"adapter must be global, fine or both, got {adapter!r}")
    adapters = list(ADAPTERS) if adapter == "both" else [adapter]
    out = Path(out)
    mp = cfg["mixed_precision"]
    if mp == "auto":
        mp = "fp16" if torch.cuda.is_available() and not cpu else "no"
    from accelerate import DataLoaderConfiguration

    # A seedable sampler makes each epoch's order a function of (seed, epoch), so --resume replays it exactly.
    acc = Accelerator(
        # Without CUDA, say CPU explicitly: accelerate reads torchrun's processes as multi-CPU DDP only with cpu=True
        # (otherwise each of N processes trains alone, as process 0 of 1, on the same checkpoint folder).
        cpu=bool(cpu) or not torch.cuda.is_available(),
        mixed_precision=mp,
        project_dir=str(out),
        # split_batches: the loader yields global batches and each process takes its share, so the lr schedule
        # steps once per optimizer step and N processes train on the batches of one
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed, split_batches=True),
        log_with=make_trackers("tclip", out / "logs", filename="loss.csv", resume=resume, report_to=report_to),
    )
    set_seed(seed)

    state = _read_state(out)
    if state["completed"] and not resume:
        raise FileExistsError(f"{out} already holds a (partial) training run; pass --resume to continue it or choose another --out")
    run_config = {**cfg, "seed": seed, "adapters": adapters}
    if resume and state.get("config") is not None:
        now, then = result_settings(run_config), result_settings(state["config"])
        changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        if changed:
            raise ValueError(
                f"{out}: --resume with a different config (changed keys: {', '.join(changed)}); "
                "resume with the stored settings or train into another --out"
            )
    state["config"] = run_config

    records = read_manifest(manifest, split=split)
    if not records:
        raise ValueError(f"{manifest}: no records with split {split!r}")
    handler = None
    acc.init_trackers("tclip", config=tracker_config(cfg))
    if acc.is_main_process:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        _write_state(out, state)
        handler = logging.FileHandler(out / "logs" / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.info("manifest %s split %s: %d images; base %s; adapters %s; seed %d", manifest, split, len(records), cfg["base"], adapters, seed)
    acc.wait_for_everyone()

    spec = parse_base_spec(cfg["base"])
    model = None
    if "base" in state["completed"]:
        from .model import load

        model = load(out)
        base_info = model.base_info
    else:
        torch.manual_seed(seed)
        base_model, base_info = build_base(spec)
    images = split_images(
        [r.image for r in records],
        tuple(base_info["image_size"]),
        cfg["image_cache_mb"],
        workers=max(1, int(cfg["image_workers"])),
        progress=progress and acc.is_local_main_process,
    )
    tokenizer = build_tokenizer(base_info)
    dataset = _PairData.build(images, records, tokenizer, cfg["augment"])
    if acc.is_main_process:
        n_var = dataset.counts.float().mean(0).tolist() if len(dataset) else [0.0, 0.0]
        logger.info("augment %s; captions per image: global %.1f, fine %.1f", cfg["augment"], *n_var)
    ctx = _Ctx(acc, out, cfg, seed, progress, [])

    if model is None:
        if spec.from_scratch and cfg["base_stage"]["steps"] > 0:
            for n, p in base_model.named_parameters():
                # The loss owns the trained temperature (copied back below); open_clip's own stays unused.
                p.requires_grad_(n not in ("logit_scale", "logit_bias"))
            scale = _run_stage(ctx, "base", base_model, _plain_encoder(base_info), dataset, "random", cfg["base_stage"], resume)
            with torch.no_grad():
                base_model.logit_scale.fill_(math.log(scale))
        torch.manual_seed(seed)  # adapter init does not depend on the base stage's length
        model = TCLIP(base_model, base_info, lora=cfg["lora"], fusion_alpha=float(cfg["fusion_alpha"]), adapters=adapters)
        state["completed"] = ["base"]
        if acc.is_main_process:
            model.save(out)
            _write_state(out, state)
        acc.wait_for_everyone()

    for name in adapters:
        if name in state["completed"]:
            continue
        if cfg["adapter_stage"]["steps"] > 0:  # 0 steps: keep the fresh (identity) adapter, e.g. a base-only run
            model.train_adapter(name)
            _run_stage(ctx, name, model, _adapter_encoder(name), dataset, name, cfg["adapter_stage"], resume)
            model.freeze_adapters()
        state["completed"].append(name)
        if acc.is_main_process:
            model.save(out)
            _write_state(out, state)
        acc.wait_for_everyone()

    if acc.is_main_process:
        state["finished"] = True
        _write_state(out, state)
        csv_path = out / "logs" / "loss.csv"
        if csv_path.exists():
            plot_loss(csv_path, out / "logs" / "loss.png")
        logger.info("wrote T-CLIP folder %s", out)
        logger.removeHandler(handler)
        handler.close()
    acc.wait_for_everyone()
    acc.end_training()  # finishes the trackers
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tclip.train",
        description=(
            "Train T-CLIP (two LoRA adapters, 'global' and 'fine', on a frozen open_clip base) on a thermgen manifest. "
            "With no pretrained weights in --base (the offline default), the same command FIRST TRAINS THE WHOLE BASE "
            "CLIP from scratch on the manifest (stage 'base'), THEN the adapters on top of it. With pretrained weights "
            "(e.g. --base ViT-B-16:openai, or ARCH:/path/ckpt.safetensors) the base stays frozen and only adapters train. "
            "Runs under accelerate: `accelerate launch -m tclip.train ...` or `torchrun --nproc_per_node N -m tclip.train ...` "
            "for several processes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--manifest", required=True, help="JSONL manifest (thermgen contract 1); needs id, image, split, global_caption, fine_caption")
    p.add_argument("--out", required=True, help="output folder: becomes the T-CLIP folder (tclip.load(OUT)), with logs/ and checkpoints/")
    p.add_argument("--split", default="train", help="manifest split to train on")
    p.add_argument(
        "--base",
        default=None,
        help="base model SPEC = ARCH[:WEIGHTS]. ARCH: a tclip config (tclip-tiny, tclip-cpu, tclip-cpu-rn), an open_clip model name or a "
        "JSON config path; WEIGHTS: omitted = random init (base trained here first), a local checkpoint path, or an open_clip "
        "pretrained tag (ViT-B-16:openai; needs network once). Or an open_clip checkpoint folder: local-dir:PATH (e.g. the "
        "synthetic-pretrained base of python -m thermgen.bench.sim2real). Default: the config's 'base' (tclip-cpu-rn)",
    )
    p.add_argument("--adapter", choices=["global", "fine", "both"], default="both", help="which adapter(s) to train")
    p.add_argument(
        "--config",
        default=None,
        help=f"training config (JSON/YAML file, or a name in tclip/train_configs: {', '.join(sorted(x.stem for x in TRAIN_CONFIG_DIR.glob('*.json')))}); "
        "default: the built-in CPU defaults",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, init, caption draws)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in --out from its last completed stage / checkpoint")
    p.add_argument("--base-steps", type=int, default=None, help="override base_stage.steps (0 skips the base stage)")
    p.add_argument("--adapter-steps", type=int, default=None, help="override adapter_stage.steps (0 keeps the adapters untrained: a base-only run)")
    p.add_argument("--batch-size", type=int, default=None, help="override the global batch size of both stages")
    p.add_argument("--lora-r", type=int, default=None, help="override lora.r (rank)")
    p.add_argument("--cpu", action="store_true", help="force CPU even when a GPU is present")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--report-to", choices=("csv", "tensorboard"), default="csv",
                   help="loss log: logs/loss.csv always; tensorboard also writes logs/tclip/ (when installed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides: dict = {}
    if args.base_steps is not None:
        overrides.setdefault("base_stage", {})["steps"] = args.base_steps
    if args.adapter_steps is not None:
        overrides.setdefault("adapter_stage", {})["steps"] = args.adapter_steps
    if args.batch_size is not None:
        overrides.setdefault("base_stage", {})["batch_size"] = args.batch_size
        overrides.setdefault("adapter_stage", {})["batch_size"] = args.batch_size
    if args.lora_r is not None:
        overrides["lora"] = {"r": args.lora_r}
    try:
        cfg = load_train_config(args.config, overrides)
        train(
            args.manifest,
            args.out,
            split=args.split,
            base=args.base,
            adapter=args.adapter,
            config=cfg,
            seed=args.seed,
            resume=args.resume,
            cpu=args.cpu,
            progress=not args.no_progress,
            report_to=args.report_to,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"tclip.train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
