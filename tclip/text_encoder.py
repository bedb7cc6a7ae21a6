"""The diffusers-facing T-CLIP text encoder: prompts -> per-token hidden states (B, L_out, hidden_size).

A `ModelMixin, ConfigMixin` component, so a diffusers pipeline can register it and
`save_pretrained` / `from_pretrained` round-trip it (config.json + safetensors, no network, no
separate tokenizer component: open_clip's BPE tokenizer ships in its wheel and is rebuilt from the
config). Each adapter is merged into its own copy of the text tower (W + B @ A * scale for q, k, v),
so the component holds plain weights and needs neither peft nor the image tower at inference.

Modes:
    "base"    the un-adapted text tower (the ablation: T-CLIP's base without LoRA)
    "global"  the global adapter's text tower
    "fine"    the fine adapter's text tower
    "fused"   per token alpha * global(prompt) + (1 - alpha) * fine(fine prompt or prompt)
    "concat"  global(prompt) tokens followed by fine(fine prompt or prompt) tokens: L_out = 2 L
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

__all__ = ["TCLIPTextEncoder", "MODES", "truncated_text"]

MODES = ("base", "global", "fine", "fused", "concat")
_TOWERS = {"base": ("base",), "global": ("global",), "fine": ("fine",), "fused": ("global", "fine"), "concat": ("global", "fine")}


def _build_tower(embed_dim: int, text_cfg: dict, quick_gelu: bool) -> nn.Module:
    from open_clip.model import _build_text_tower

    return _build_text_tower(embed_dim, dict(text_cfg), quick_gelu=quick_gelu)


def truncated_text(tokenizer, texts: list[str], context_length: int | None = None) -> list[str]:
    """Per text, the words an open_clip ``SimpleTokenizer`` cuts off to fit ``context_length`` tokens.

    The tokenizer keeps ``context_length - 2`` BPE tokens between its start and end tokens and silently drops
    the rest; this returns the dropped part, decoded (lower case, as the tokenizer cleans it), or ``""`` when
    the text fits. Tokenizers without ``encode``/``decode`` (e.g. open_clip's ``HFTokenizer``) are not
    inspected: ``""`` for every text.
    """
    n = int(context_length or getattr(tokenizer, "context_length", 0) or 77)
    if not (hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode")):
        return ["" for _ in texts]
    keep = n - 2  # room left by the start and end tokens
    out = []
    for text in texts:
        ids = tokenizer.encode(text)
        out.append(" ".join(tokenizer.decode(ids[keep:]).split()) if len(ids) > keep else "")
    return out


class TCLIPTextEncoder(ModelMixin, ConfigMixin):
    """Per-token hidden states of T-CLIP's adapted text tower(s), for conditioning a diffusion UNet.

    Args (the saved config):
        embed_dim: T-CLIP embedding width (the text projection's output; used only to rebuild the tower).
        text_cfg: open_clip `text_cfg` of the base (built-in text transformer; HF text towers unsupported).
        mode: one of "base", "global", "fine", "fused", "concat" (module docstring).
        alpha: fusion weight of the global tower in "fused" mode, in [0, 1].
        quick_gelu: whether the base uses QuickGELU (OpenAI-pretrained CLIPs do).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        embed_dim: int = 512,
        text_cfg: dict | None = None,
        mode: str = "global",
        alpha: float = 0.8,
        quick_gelu: bool = False,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        text_cfg = dict(text_cfg or {})
        if text_cfg.get("hf_model_name"):
            raise NotImplementedError("TCLIPTextEncoder supports open_clip's built-in text transformer only")
        self.towers = nn.ModuleDict({name: _build_tower(embed_dim, text_cfg, quick_gelu) for name in _TOWERS[mode]})
        first = next(iter(self.towers.values()))
        self.context_length = int(first.context_length)
        self._tokenizer = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tclip(cls, tclip_dir_or_model, mode: str = "fused", alpha: float | None = None) -> "TCLIPTextEncoder":
        """Build from a T-CLIP folder or a `tclip.TCLIP` model; adapters are merged into tower copies.

        alpha defaults to the T-CLIP's fusion alpha (0.8 unless configured otherwise).
        """
        from .lora import merged_base_state_dict
        from .model import TCLIP, load

        model = tclip_dir_or_model if isinstance(tclip_dir_or_model, TCLIP) else load(Path(tclip_dir_or_model))
        arch = model.base_info.get("arch_config")
        if not arch:
            raise ValueError("the T-CLIP's base has no architecture config (hub schema bases are unsupported here)")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        for name in _TOWERS[mode]:
            if name != "base" and name not in model.adapters:
                raise ValueError(f"mode {mode!r} needs the {name!r} adapter; this T-CLIP has {model.adapters}")
        encoder = cls(
            embed_dim=int(arch["embed_dim"]),
            text_cfg=arch["text_cfg"],
            mode=mode,
            alpha=float(model.fusion_alpha if alpha is None else alpha),
            quick_gelu=bool(arch.get("quick_gelu", False)),
        )
        for name, tower in encoder.towers.items():
            state = merged_base_state_dict(model.clip, None if name == "base" else name)
            text_state = {
                k: v for k, v in state.items() if not k.startswith("visual.") and k not in ("logit_scale", "logit_bias")
            }
            tower.load_state_dict(text_state, strict=True)
        encoder.to(model.pixel_mean.device)
        return encoder.eval()

    # ------------------------------------------------------------------ api
    @property
    def hidden_size(self) -> int:
        """Width of the per-token states (the text transformer width, e.g. 512 for ViT-B/16)."""
        return int(next(iter(self.towers.values())).width)

    @property
    def pooled_size(self) -> int:
        """Width of the pooled prompt embedding (:meth:`pooled`): T-CLIP's joint embedding width."""
        return int(self.config.embed_dim)

    def pooled(self, input_ids: torch.LongTensor, input_ids_fine: torch.LongTensor | None = None) -> torch.FloatTensor:
        """T-CLIP's prompt embedding (B, pooled_size): the end-of-text state projected into the joint space.

        This is the vector the contrastive training made discriminative (what retrieval ranks by), so it carries
        scene-wide attributes (time of day, altitude, view, counts) more plainly than the per-token states. The
        two adapters are fused as in retrieval ("fused"/"concat": alpha * global + (1 - alpha) * fine of the unit
        embeddings). Returned with unit RMS (L2 norm sqrt(pooled_size)), a scale that a UNet's class-embedding
        MLP takes without rescaling.
        """
        import torch.nn.functional as F

        mode = self.config.mode
        if mode in ("base", "global", "fine"):
            e = F.normalize(self.towers[mode](input_ids.to(self.device)), dim=-1)
        else:
            fine_ids = input_ids if input_ids_fine is None else input_ids_fine
            g = F.normalize(self.towers["global"](input_ids.to(self.device)), dim=-1)
            f = F.normalize(self.towers["fine"](fine_ids.to(self.device)), dim=-1)
            a = float(self.config.alpha)
            e = F.normalize(a * g + (1.0 - a) * f, dim=-1)
        return e * (self.pooled_size ** 0.5)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from open_clip.tokenizer import SimpleTokenizer

            self._tokenizer = SimpleTokenizer(context_length=self.context_length)
        return self._tokenizer

    def tokenize(self, prompts: list[str]) -> torch.LongTensor:
        """Prompts -> token ids (B, context_length), open_clip BPE (truncated at the context length;
        :meth:`truncated_text` says what a prompt loses)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not a single string")
        return self.tokenizer(list(prompts))

    def truncated_text(self, prompts: list[str]) -> list[str]:
        """Per prompt, the text :meth:`tokenize` drops to fit ``context_length`` tokens; ``""`` when it fits."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not a single string")
        return truncated_text(self.tokenizer, prompts, self.context_length)

    def _tokens(self, tower: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        x, attn_mask = tower._embeds(input_ids.to(self.device))
        x = tower.transformer(x, attn_mask=attn_mask)
        if tower.cls_emb is not None:  # CoCa-style appended class token: drop it from the token states
            x = x[:, :-1]
        return tower.ln_final(x)

    def forward(self, input_ids: torch.LongTensor, input_ids_fine: torch.LongTensor | None = None) -> torch.FloatTensor:
        """Token ids (B, L) [and fine-prompt ids (B, L)] -> hidden states (B, L_out, hidden_size).

        L_out = L, except "concat" (2 L). `input_ids_fine` is used by "fused" and "concat" (the same
        prompt is used when it is None) and ignored by the single-tower modes.
        """
        mode = self.config.mode
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
        if mode in ("base", "global", "fine"):
            return self._tokens(self.towers[mode], input_ids)
        fine_ids = input_ids if input_ids_fine is None else input_ids_fine
        if fine_ids.shape != input_ids.shape:
            raise ValueError(f"input_ids_fine shape {tuple(fine_ids.shape)} != input_ids shape {tuple(input_ids.shape)}")
        g = self._tokens(self.towers["global"], input_ids)
        f = self._tokens(self.towers["fine"], fine_ids)
        if mode == "fused":
            a = float(self.config.alpha)
            return a * g + (1.0 - a) * f
        return torch.cat([g, f], dim=1)

    @torch.no_grad()
    def encode_prompt(
        self, prompts: list[str], prompts_fine: list[str] | None = None, device: torch.device | str | None = None,
        return_pooled: bool = False,
    ) -> torch.FloatTensor | tuple[torch.FloatTensor, torch.FloatTensor]:
        """Prompts [and fine prompts] -> hidden states (B, L_out, hidden_size) on `device` (default: the model's).

        return_pooled: also return :meth:`pooled` (B, pooled_size), as ``(states, pooled)``.
        """
        ids = self.tokenize(prompts)
        ids_fine = None
        if prompts_fine is not None:
            if len(prompts_fine) != len(prompts):
                raise ValueError(f"prompts_fine has {len(prompts_fine)} entries, prompts has {len(prompts)}")
            ids_fine = self.tokenize(prompts_fine)
        out = self(ids, ids_fine)
        out = out if device is None else out.to(device)
        if not return_pooled:
            return out
        pooled = self.pooled(ids, ids_fine)
        return out, (pooled if device is None else pooled.to(device))
