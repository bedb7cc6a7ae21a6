"""T-CLIP: one frozen open_clip base with two named LoRA adapters ("global", "fine"), fused at inference.

Folder layout written by `TCLIP.save(dir)` and read by `tclip.load(dir)`:

    dir/tclip_config.json            base spec + architecture config, preprocessing, LoRA settings, fusion alpha
    dir/base.safetensors             the base weights in open_clip's own layout (absent when the config
                                     references a named pretrained model, e.g. ViT-B-16:openai)
    dir/adapters/global/             peft adapter folders (adapter_config.json + adapter_model.safetensors)
    dir/adapters/fine/

Base specs (`--base SPEC`), grammar `ARCH[:WEIGHTS]`:

    ARCH     a tclip config name (tclip/model_configs/*.json: tclip-tiny, tclip-cpu, tclip-cpu-rn, ...), an open_clip
             model name (ViT-B-16, ...), or the path of an open_clip-style JSON model config;
             or one of open_clip's schemas `hf-hub:ORG/REPO` / `local-dir:PATH` (weights included; a local-dir
             base, e.g. one written by `save_open_clip_folder` / `TCLIP.export_base`, is copied into the T-CLIP
             folder, so that folder stays loadable on its own).
    WEIGHTS  omitted: random init (`tclip.train` then trains the whole base on the manifest first);
             a path to a local checkpoint (.safetensors, or .pt/.pth/.bin read with weights_only=True);
             otherwise an open_clip pretrained tag for ARCH (e.g. `ViT-B-16:openai`; downloads once).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import resize_square
from .lora import make_lora_config, merged_base_state_dict, split_attention

__all__ = [
    "TCLIP",
    "BaseSpec",
    "parse_base_spec",
    "read_open_clip_folder",
    "save_open_clip_folder",
    "build_base",
    "build_tokenizer",
    "fuse",
    "preprocess_thermal",
    "load",
    "list_configs",
    "get_arch_config",
    "IMAGE_VARIANTS",
    "TEXT_VARIANTS",
    "ADAPTERS",
    "CONFIG_NAME",
]

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
CONFIG_NAME = "tclip_config.json"
BASE_WEIGHTS_NAME = "base.safetensors"
FORMAT_VERSION = 1
ADAPTERS = ("global", "fine")
IMAGE_VARIANTS = ("base", "global", "fine", "dual", "tclip-global", "tclip-fine")
TEXT_VARIANTS = ("base", "global", "fine", "dual", "tclip-global", "tclip-fine")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD
DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_LORA = {"r": 8, "alpha": 1.0, "dropout": 0.0, "towers": ["vision", "text"], "mlp": False,
                "convs": False}


def list_configs() -> list[str]:
    """Names of the model configs shipped with tclip (tclip/model_configs/*.json)."""
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))


def get_arch_config(arch: str) -> dict:
    """The open_clip model config dict for a tclip config name, an open_clip model name or a JSON path."""
    import open_clip

    path = Path(arch)
    if arch.endswith(".json"):
        if not path.is_file():
            raise FileNotFoundError(f"model config file not found: {arch}")
        return json.loads(path.read_text())
    local = MODEL_CONFIG_DIR / f"{arch}.json"
    if local.is_file():
        return json.loads(local.read_text())
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(
            f"unknown model architecture {arch!r}: not a tclip config ({', '.join(list_configs())}), "
            "not an open_clip model name (open_clip.list_models()) and not a .json file"
        )
    return copy.deepcopy(cfg)


@dataclass(frozen=True)
class BaseSpec:
    """A parsed `--base` spec (see the module docstring for the grammar)."""

    arch: str
    weights: str | None = None  # None: random init
    weights_kind: str = "scratch"  # "scratch" | "file" | "pretrained" | "schema"

    @property
    def from_scratch(self) -> bool:
        return self.weights_kind == "scratch"

    def __str__(self) -> str:
        return self.arch if self.weights is None else f"{self.arch}:{self.weights}"


LOCAL_DIR = "local-dir:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"


def _read_json(path: Path, missing: str):
    """A JSON file's content; `missing` is the FileNotFoundError message, bad JSON a ValueError naming the file."""
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from None


def read_open_clip_folder(folder: str | Path) -> dict:
    """The `open_clip_config.json` of an open_clip checkpoint folder (`model_cfg`, `preprocess_cfg`)."""
    path = Path(folder) / OPEN_CLIP_CONFIG
    cfg = _read_json(path, f"{folder}: not an open_clip checkpoint folder ({OPEN_CLIP_CONFIG} missing)")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise ValueError(f"{path}: missing key 'model_cfg'")
    return cfg


def save_open_clip_folder(model: nn.Module | dict, arch_config: dict, folder: str | Path, mean=DEFAULT_MEAN, std=DEFAULT_STD,
                          extra: dict | None = None) -> Path:
    """Write `model` (an open_clip CLIP, or its state dict) as an open_clip checkpoint folder.

    The folder holds `open_clip_config.json` and `open_clip_model.safetensors`, the layout of open_clip's
    hub repos: `open_clip.create_model("local-dir:FOLDER")` loads it without tclip, and
    `tclip.train --base local-dir:FOLDER` adapts it like any pretrained base. `extra` is stored under
    "thermgen" in the config (provenance: corpus, steps); open_clip ignores it.
    """
    from safetensors.torch import save_file

    from .lora import fuse_attention_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {k: v for k, v in copy.deepcopy(arch_config).items() if k != "preprocess_cfg"}
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": list(mean), "std": list(std), "size": size, "interpolation": "bilinear", "resize_mode": "squash"},
    }
    if extra:
        config["thermgen"] = extra
    state = model if isinstance(model, dict) else model.state_dict()
    state = {k: v.detach().contiguous().cpu() for k, v in fuse_attention_state_dict(state).items()}
    save_file(state, str(folder / OPEN_CLIP_WEIGHTS))
    (folder / OPEN_CLIP_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def parse_base_spec(spec: str) -> BaseSpec:
    """Parse `ARCH[:WEIGHTS]`; see the module docstring."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty --base spec")
    if spec.startswith(("hf-hub:", "local-dir:")):
        return BaseSpec(arch=spec, weights=None, weights_kind="schema")
    arch, sep, weights = spec.partition(":")
    if not sep or not weights:
        return BaseSpec(arch=arch)
    looks_like_path = weights.endswith(CHECKPOINT_SUFFIXES) or "/" in weights or os.sep in weights
    if looks_like_path or Path(weights).exists():
        if not Path(weights).is_file():
            raise FileNotFoundError(f"--base {spec}: checkpoint file {weights} not found")
        return BaseSpec(arch=arch, weights=weights, weights_kind="file")
    return BaseSpec(arch=arch, weights=weights, weights_kind="pretrained")


def _instantiate(arch_config: dict) -> nn.Module:
    import open_clip

    cfg = copy.deepcopy(arch_config)
    cfg.pop("preprocess_cfg", None)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    return cls(**cfg)


def _load_weights_file(model: nn.Module, path: str | Path) -> None:
    import open_clip

    # open_clip's loader reads safetensors, or torch.load(weights_only=True), and converts legacy layouts.
    incompatible = open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    if incompatible and (incompatible.missing_keys or incompatible.unexpected_keys):
        raise ValueError(f"{path}: checkpoint does not match the architecture: {incompatible}")


def build_base(spec: str | BaseSpec, arch_config: dict | None = None) -> tuple[nn.Module, dict]:
    """Build the open_clip base model of a spec. Returns (model, info).

    `info` is the "base" block of `tclip_config.json`: spec, arch, arch_config, weights kind, and
    the preprocessing ("image_size", "mean", "std"). `arch_config` overrides the config lookup
    (used when loading a saved folder, so it does not depend on the config files still existing).
    """
    import open_clip

    spec = parse_base_spec(spec) if isinstance(spec, str) else spec
    mean, std = DEFAULT_MEAN, DEFAULT_STD
    if spec.weights_kind == "schema" and spec.arch.startswith(LOCAL_DIR) and arch_config is None:
        # An open_clip checkpoint folder on disk: its architecture is known, so the T-CLIP folder can
        # store it and the weights and stay loadable without that folder (and the text tower can be
        # rebuilt for the diffusion pipeline).
        arch_config = read_open_clip_folder(spec.arch[len(LOCAL_DIR):])["model_cfg"]
    if spec.weights_kind in ("pretrained", "schema"):
        # Named pretrained weights and hub schemas go through open_clip (network on first use).
        model = open_clip.create_model(
            spec.arch, pretrained=spec.weights if spec.weights_kind == "pretrained" else None
        )
        pp = open_clip.get_model_preprocess_cfg(model)
        mean, std = tuple(pp.get("mean", mean)), tuple(pp.get("std", std))
        if arch_config is None and spec.weights_kind == "pretrained":
            arch_config = open_clip.get_model_config(spec.arch)
    else:
        arch_config = copy.deepcopy(arch_config) if arch_config is not None else get_arch_config(spec.arch)
        model = _instantiate(arch_config)
        if spec.weights_kind == "file":
            _load_weights_file(model, spec.weights)
        pp = arch_config.get("preprocess_cfg", {})
        mean, std = tuple(pp.get("mean", mean)), tuple(pp.get("std", std))
    size = model.visual.image_size
    size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
    info = {
        "spec": str(spec),
        "arch": spec.arch,
        "weights_kind": spec.weights_kind,
        "weights": spec.weights,
        "arch_config": arch_config,
        "image_size": size,
        "mean": list(mean),
        "std": list(std),
    }
    return model, info


def build_tokenizer(base_info: dict):
    """The tokenizer of a base: open_clip's BPE tokenizer (ships in the wheel) or the HF text tower's."""
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    arch = str(base_info.get("arch", ""))
    if arch.startswith(LOCAL_DIR) and Path(arch[len(LOCAL_DIR):]).is_dir():
        import open_clip

        # the folder's own tokenizer settings (tokenizer_kwargs, a local HF tokenizer), as open_clip reads them
        return open_clip.get_tokenizer(arch)
    text_cfg = (base_info.get("arch_config") or {}).get("text_cfg", {})
    context_length = int(text_cfg.get("context_length", 77))
    if "hf_tokenizer_name" in text_cfg or "hf_model_name" in text_cfg:
        name = text_cfg.get("hf_tokenizer_name") or text_cfg["hf_model_name"]
        return HFTokenizer(name, context_length=context_length)
    if base_info.get("arch_config") is None:
        import open_clip

        return open_clip.get_tokenizer(base_info["arch"])
    return SimpleTokenizer(context_length=context_length)


def preprocess_thermal(images: torch.Tensor, size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Thermal (B, 1, H, W) or (B, H, W) float in [0, 1], white-hot -> normalised CLIP input (B, 3, *size).

    Resized whole-frame (antialiased bilinear), replicated to 3 channels, normalised with the base's
    mean/std (tensors broadcastable to (1, 3, 1, 1)).
    """
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1, H, W) thermal in [0, 1], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
    images = resize_square(images.to(mean.device, torch.float32), size)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images - mean) / std


def fuse(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """The paper's fusion: L2-normalise each, `alpha * a + (1 - alpha) * b`, L2-normalise again. (B, D)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"fusion alpha must be in [0, 1], got {alpha}")
    return F.normalize(alpha * F.normalize(a, dim=-1) + (1.0 - alpha) * F.normalize(b, dim=-1), dim=-1)


def _validate_lora(lora: dict) -> dict:
    out = dict(DEFAULT_LORA)
    unknown = set(lora) - set(DEFAULT_LORA)
    if unknown:
        raise ValueError(f"unknown lora config key(s) {sorted(unknown)}; known: {sorted(DEFAULT_LORA)}")
    out.update(lora)
    if not isinstance(out["r"], int) or out["r"] < 1:
        raise ValueError(f"lora.r must be a positive integer, got {out['r']!r}")
    if not isinstance(out["towers"], (list, tuple)) or not set(out["towers"]) <= {"vision", "text"} or not out["towers"]:
        raise ValueError(f"lora.towers must be a non-empty subset of ['vision', 'text'], got {out['towers']!r}")
    out["towers"] = list(out["towers"])
    out["alpha"] = float(out["alpha"])
    out["dropout"] = float(out["dropout"])
    out["mlp"] = bool(out["mlp"])
    out["convs"] = bool(out["convs"])
    if out["convs"] and "vision" not in out["towers"]:
        raise ValueError(f"lora.convs adapts the image tower, but lora.towers={out['towers']} has no 'vision'")
    return out


class TCLIP(nn.Module):
    """A frozen open_clip base with named LoRA adapters ("global", "fine") and fused inference.

    Build with `TCLIP.from_base(spec)` / `TCLIP(base_model, base_info)`, load with `tclip.load(dir)`.
    The base lives once in memory; `self.clip` is the `peft.PeftModel` around it.
    """

    def __init__(
        self,
        base: nn.Module,
        base_info: dict,
        lora: dict | None = None,
        fusion_alpha: float = 0.8,
        adapters: Sequence[str] = ADAPTERS,
        adapter_dirs: dict[str, str | Path] | None = None,
        extra: dict | None = None,
    ):
        super().__init__()
        from peft import PeftModel, get_peft_model

        if not 0.0 <= fusion_alpha <= 1.0:
            raise ValueError(f"fusion_alpha must be in [0, 1], got {fusion_alpha}")
        adapters = list(adapters)
        if not adapters or len(set(adapters)) != len(adapters):
            raise ValueError(f"adapters must be a non-empty list of distinct names, got {adapters}")
        self.base_info = copy.deepcopy(base_info)
        self.lora = _validate_lora(lora or {})
        self.fusion_alpha = float(fusion_alpha)
        self.extra = dict(extra or {})
        self.tokenizer = build_tokenizer(self.base_info)
        split_attention(base)
        for p in base.parameters():
            p.requires_grad_(False)
        if adapter_dirs:
            missing = [a for a in adapters if a not in adapter_dirs]
            if missing:
                raise ValueError(f"no adapter folder given for {missing}")
            clip = PeftModel.from_pretrained(base, str(adapter_dirs[adapters[0]]), adapter_name=adapters[0])
            for name in adapters[1:]:
                clip.load_adapter(str(adapter_dirs[name]), adapter_name=name)
        else:
            config = make_lora_config(**self.lora)
            clip = get_peft_model(base, config, adapter_name=adapters[0])
            for name in adapters[1:]:
                clip.add_adapter(name, make_lora_config(**self.lora))
        self.clip = clip
        self.adapters = adapters
        self._trainable: str | None = None
        self.freeze_adapters()
        size = self.base_info["image_size"]
        self.register_buffer("pixel_mean", torch.tensor(self.base_info["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.base_info["std"]).view(1, 3, 1, 1), persistent=False)
        self.image_size = (int(size[0]), int(size[1]))

    # ------------------------------------------------------------------ construction / io
    @classmethod
    def from_base(cls, spec: str | BaseSpec, **kwargs) -> "TCLIP":
        """Build the base of `spec` (see module docstring) and attach fresh adapters (identity at init)."""
        base, info = build_base(spec)
        return cls(base, info, **kwargs)

    @property
    def embed_dim(self) -> int:
        return int(self.base_info["arch_config"]["embed_dim"]) if self.base_info.get("arch_config") else int(
            self.clip.get_base_model().text_projection.shape[-1]
        )

    @property
    def base_model(self) -> nn.Module:
        """The underlying open_clip model (attention split, LoRA layers injected)."""
        return self.clip.get_base_model()

    def config_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "base": self.base_info,
            "lora": self.lora,
            "fusion_alpha": self.fusion_alpha,
            "adapters": list(self.adapters),
            **({"extra": self.extra} if self.extra else {}),
        }

    def save(self, save_dir: str | Path, save_base: bool | None = None) -> Path:
        """Write the T-CLIP folder. `save_base=None`: write base.safetensors unless the base is a named
        pretrained model that `tclip.load` can fetch again (then only the reference is stored)."""
        from safetensors.torch import save_file

        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        info = copy.deepcopy(self.base_info)
        if save_base is None:
            # Named weights and hub repos can be fetched again; a local folder may move or vanish.
            save_base = info["weights_kind"] not in ("pretrained", "schema") or str(info["arch"]).startswith(LOCAL_DIR)
        if save_base:
            state = {k: v.detach().contiguous().cpu() for k, v in merged_base_state_dict(self.clip, None).items()}
            save_file(state, str(save_dir / BASE_WEIGHTS_NAME))
            info["base_weights"] = BASE_WEIGHTS_NAME
        else:
            info["base_weights"] = None
        config = self.config_dict()
        config["base"] = info
        self.clip.save_pretrained(str(save_dir / "adapters"), selected_adapters=list(self.adapters))
        (save_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return save_dir

    def export_base(self, folder: str | Path, adapter: str | None = None, extra: dict | None = None) -> Path:
        """Write the base (with `adapter` merged in, or plain) as an open_clip checkpoint folder
        (:func:`save_open_clip_folder`): a pretrained base for `tclip.train --base local-dir:FOLDER`."""
        if adapter is not None:
            self._check_adapter(adapter)
        if not self.base_info.get("arch_config"):
            raise ValueError("this T-CLIP's base has no architecture config (a hub schema base); cannot export it")
        state = merged_base_state_dict(self.clip, adapter)
        return save_open_clip_folder(state, self.base_info["arch_config"], folder, self.base_info["mean"], self.base_info["std"], extra)

    # ------------------------------------------------------------------ adapter control
    def _check_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise ValueError(f"this T-CLIP has no {name!r} adapter (adapters: {self.adapters})")

    def train_adapter(self, name: str) -> list[nn.Parameter]:
        """Make adapter `name` the only trainable parameters (the base and other adapters frozen)."""
        self._check_adapter(name)
        self.freeze_adapters()
        self.clip.set_adapter(name, inference_mode=False)
        self._trainable = name
        return [p for p in self.clip.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "TCLIP":
        """Train mode for the adapters only: the frozen base's batch-norm layers (ResNet image towers) stay
        in eval mode, so training an adapter never moves the base's running statistics (its buffers)."""
        super().train(mode)
        if mode:
            for m in self.clip.get_base_model().modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def freeze_adapters(self) -> None:
        for n, p in self.clip.named_parameters():
            p.requires_grad_(False)
        self._trainable = None

    def _use(self, adapter: str | None):
        """Context selecting one adapter (None: the plain base) for the next forward passes."""
        if adapter is None:
            return self.clip.disable_adapter()
        self._check_adapter(adapter)
        self.clip.set_adapter(adapter, inference_mode=adapter != self._trainable)
        return nullcontext()

    # ------------------------------------------------------------------ encoders
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Thermal (B, 1, H, W) or (B, H, W) float in [0, 1], white-hot -> normalised (B, 3, h, w) input."""
        return preprocess_thermal(images, self.image_size, self.pixel_mean, self.pixel_std)

    def tokenize(self, texts: Sequence[str]) -> torch.LongTensor:
        """Captions -> token ids (B, context_length) with the base's tokenizer."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        return self.tokenizer(list(texts))

    def image_features(self, pixels: torch.Tensor, adapter: str | None) -> torch.Tensor:
        """Unnormalised image embeddings (B, D) of preprocessed pixels through one adapter (None: base)."""
        with self._use(adapter):
            return self.clip.get_base_model().encode_image(pixels)

    def text_features(self, tokens: torch.Tensor, adapter: str | None) -> torch.Tensor:
        """Unnormalised text embeddings (B, D) of token ids through one adapter (None: base)."""
        with self._use(adapter):
            return self.clip.get_base_model().encode_text(tokens.to(self.pixel_mean.device))

    def text_token_states(self, tokens: torch.Tensor, adapter: str | None) -> torch.Tensor:
        """Per-token hidden states (B, L, text width) after the final LayerNorm (before pooling/projection)."""
        base = self.clip.get_base_model()
        if not hasattr(base, "token_embedding"):
            raise NotImplementedError("per-token states are implemented for open_clip's built-in text tower")
        tokens = tokens.to(self.pixel_mean.device)
        with self._use(adapter):
            cast = base.transformer.get_cast_dtype()
            x = base.token_embedding(tokens).to(cast) + base.positional_embedding.to(cast)
            x = base.transformer(x, attn_mask=base.attn_mask)
            return base.ln_final(x)

    def _image_adapters(self, variant: str) -> tuple[str | None, ...]:
        if variant not in IMAGE_VARIANTS:
            raise ValueError(f"image variant must be one of {IMAGE_VARIANTS}, got {variant!r}")
        if variant == "base":
            return (None,)
        if variant in ("global", "fine"):
            return (variant,)
        return ("global", "fine")

    def encode_image(self, images: torch.Tensor, variant: str = "dual", alpha: float | None = None) -> torch.Tensor:
        """L2-normalised image embeddings (B, D).

        images: float (B, 1, H, W) in [0, 1], thermal white-hot (resized, replicated to 3 channels and
        normalised inside). variant: "base" (no adapter), "global", "fine", or "dual" (also accepted:
        "tclip-global"/"tclip-fine"; all three fuse both adapters: alpha * global + (1 - alpha) * fine).
        """
        adapters = self._image_adapters(variant)
        pixels = self.preprocess(images)
        feats = [self.image_features(pixels, a) for a in adapters]
        if len(feats) == 1:
            return F.normalize(feats[0], dim=-1)
        return fuse(feats[0], feats[1], self.fusion_alpha if alpha is None else alpha)

    def encode_text(
        self,
        texts: Sequence[str] | torch.Tensor,
        texts_fine: Sequence[str] | torch.Tensor | None = None,
        variant: str = "dual",
        alpha: float | None = None,
    ) -> torch.Tensor:
        """L2-normalised text embeddings (B, D).

        variant: "base" / "global" / "fine": `texts` through that one adapter (none for "base");
        "dual": `texts` (global captions) through the global adapter and `texts_fine` (fine captions)
        through the fine adapter, fused; "tclip-global" / "tclip-fine": `texts` through both adapters,
        fused (the fallbacks when only one caption exists). Strings or token ids (B, L) accepted.
        """
        if variant not in TEXT_VARIANTS:
            raise ValueError(f"text variant must be one of {TEXT_VARIANTS}, got {variant!r}")
        tok = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        a = self.fusion_alpha if alpha is None else alpha
        if variant == "base":
            return F.normalize(self.text_features(tok, None), dim=-1)
        if variant in ("global", "fine"):
            return F.normalize(self.text_features(tok, variant), dim=-1)
        if variant == "dual":
            if texts_fine is None:
                raise ValueError("variant 'dual' needs texts_fine (the fine captions); use 'tclip-global' without them")
            tok_f = texts_fine if isinstance(texts_fine, torch.Tensor) else self.tokenize(texts_fine)
            if tok_f.shape[0] != tok.shape[0]:
                raise ValueError(f"texts ({tok.shape[0]}) and texts_fine ({tok_f.shape[0]}) differ in length")
            return fuse(self.text_features(tok, "global"), self.text_features(tok_f, "fine"), a)
        return fuse(self.text_features(tok, "global"), self.text_features(tok, "fine"), a)

    def forward(self, images: torch.Tensor, texts: torch.Tensor, adapter: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: (normalised image features, normalised text features) through one adapter."""
        return (
            F.normalize(self.image_features(images, adapter), dim=-1),
            F.normalize(self.text_features(texts, adapter), dim=-1),
        )


def load(model_dir: str | Path, device: str | torch.device = "cpu") -> TCLIP:
    """Load a T-CLIP folder written by `TCLIP.save` (see the module docstring). Eval mode, frozen."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    cfg_path = model_dir / CONFIG_NAME
    config = _read_json(cfg_path, f"{model_dir}: not a T-CLIP folder ({CONFIG_NAME} missing)")
    for key in ("format_version", "base", "lora", "fusion_alpha", "adapters"):
        if key not in config:
            raise ValueError(f"{cfg_path}: missing key {key!r}")
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: format_version {config['format_version']} unsupported (expected {FORMAT_VERSION})")
    info = dict(config["base"])
    weights_file = info.pop("base_weights", None)
    if weights_file:
        spec = BaseSpec(arch=info["arch"])  # architecture only; weights come from the folder
        base, _ = build_base(spec, arch_config=info["arch_config"])
        state = load_file(str(model_dir / weights_file))
        base.load_state_dict(state, strict=True)
    else:
        spec = BaseSpec(arch=info["arch"], weights=info.get("weights"), weights_kind=info["weights_kind"])
        base, _ = build_base(spec, arch_config=info.get("arch_config"))
    dirs = {name: model_dir / "adapters" / name for name in config["adapters"]}
    for name, d in dirs.items():
        if not (d / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: adapter folder {d} missing adapter_config.json")
    model = TCLIP(
        base,
        info,
        lora=config["lora"],
        fusion_alpha=config["fusion_alpha"],
        adapters=config["adapters"],
        adapter_dirs=dirs,
        extra=config.get("extra"),
    )
    return model.to(device).eval()
