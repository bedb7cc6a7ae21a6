"""LoRA on the q, k and v projections of open_clip attention, managed by peft.

Why not peft's own `nn.MultiheadAttention` support: open_clip's attention is `nn.MultiheadAttention`
(one fused `in_proj_weight` for q/k/v plus `out_proj`), and peft 0.21.2 applies the out_proj delta
twice on that path (huggingface/peft#3774), while also adapting out_proj, which the paper does not.

The design here: `split_attention(model)` replaces every `nn.MultiheadAttention` by `QKVAttention`,
an exact, weight-for-weight equivalent with separate `q_proj`, `k_proj`, `v_proj` and `out_proj`
`nn.Linear` layers (verified against the original in the tests). After that, stock peft LoRA on
`nn.Linear` applies (`target_modules` below): every peft feature works unchanged (named adapters,
`set_adapter`, `disable_adapter`, merging, `save_pretrained`/`from_pretrained` of the adapter
folders), and the adapted layer equals `W + B @ A * (alpha / r)` for each of q, k, v separately
(rank r per projection: 6 * r * width trainable parameters per attention layer).

ResNet bases (open_clip's `ModifiedResNet`, e.g. RN50) end in an `AttentionPool2d` that feeds its q/k/v
weights to `F.multi_head_attention_forward` directly, so a LoRA wrapper on its `q_proj` would be
silently ignored. `split_attention` swaps it for `LinearAttentionPool2d`, which calls the same
`nn.Linear` modules (same parameter names, so checkpoints load unchanged) and is equally adapted.

Loading a T-CLIP adapter with peft directly (no tclip code beyond the split)::

    base = open_clip.create_model(...)          # or tclip.load(dir).clip.get_base_model()
    tclip.lora.split_attention(base)
    model = peft.PeftModel.from_pretrained(base, "DIR/adapters/global", adapter_name="global")
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "QKVAttention",
    "LinearAttentionPool2d",
    "split_attention",
    "fuse_attention_state_dict",
    "lora_target_modules",
    "make_lora_config",
    "lora_parameter_count",
    "merged_base_state_dict",
]

TOWERS = ("vision", "text")


class QKVAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections, a drop-in for `nn.MultiheadAttention`.

    Same constructor meaning and the same `forward(query, key, value, key_padding_mask, need_weights,
    attn_mask, ...)` signature as `nn.MultiheadAttention` (only `need_weights=False`, which is what
    open_clip uses). Inputs `(B, L, E)` when `batch_first` else `(L, B, E)`; returns `(output, None)`.
    Masks follow the `nn.MultiheadAttention` convention: a boolean `attn_mask` / `key_padding_mask`
    marks positions that may NOT be attended; a float `attn_mask` is added to the attention logits.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, batch_first: bool = True
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> "QKVAttention":
        """Build the exact equivalent of `mha` (weights copied, same device and dtype)."""
        if not mha._qkv_same_embed_dim:
            raise ValueError("QKVAttention.from_mha supports only kdim == vdim == embed_dim attention")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("QKVAttention.from_mha does not support add_bias_kv / add_zero_attn")
        bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=bias, batch_first=mha.batch_first)
        new.to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            for proj, w in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_weight.chunk(3, dim=0)):
                proj.weight.copy_(w)
            if bias:
                for proj, b in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_bias.chunk(3, dim=0)):
                    proj.bias.copy_(b)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        return new

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        if need_weights:
            raise NotImplementedError("QKVAttention does not return attention weights (need_weights=True)")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        bsz, q_len, _ = query.shape
        k_len = key.shape[1]

        def heads(x: torch.Tensor, length: int) -> torch.Tensor:
            return x.view(bsz, length, self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(self.q_proj(query), q_len)
        k = heads(self.k_proj(key), k_len)
        v = heads(self.v_proj(value), k_len)

        mask = _to_sdpa_mask(attn_mask, key_padding_mask, bsz, self.num_heads, q_len, k_len, q.dtype)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )
        out = self.out_proj(out.transpose(1, 2).reshape(bsz, q_len, self.embed_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, None


def _to_sdpa_mask(attn_mask, key_padding_mask, bsz, num_heads, q_len, k_len, dtype):
    """Turn `nn.MultiheadAttention` masks into one additive float mask broadcastable to (B, H, Lq, Lk)."""
    mask = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=dtype).masked_fill(attn_mask, float("-inf"))
        else:
            attn_mask = attn_mask.to(dtype)
        if attn_mask.dim() == 3:  # (B * H, Lq, Lk)
            attn_mask = attn_mask.view(bsz, num_heads, q_len, k_len)
        mask = attn_mask
    if key_padding_mask is not None:
        if key_padding_mask.dtype == torch.bool:
            kpm = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
            kpm = kpm.masked_fill(key_padding_mask, float("-inf"))
        else:
            kpm = key_padding_mask.to(dtype)
        kpm = kpm.view(bsz, 1, 1, k_len)
        mask = kpm if mask is None else mask + kpm
    return mask


class LinearAttentionPool2d(nn.Module):
    """open_clip's `AttentionPool2d` (the ResNet towers' head) computed through its `nn.Linear` modules.

    Same parameters and names (`positional_embedding`, `q_proj`, `k_proj`, `v_proj`, `c_proj`) and the
    same output; only the pooled (mean) token is used as query, as that is the only output kept.
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.positional_embedding = nn.Parameter(torch.zeros(spacial_dim**2 + 1, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    @classmethod
    def from_pool(cls, pool: nn.Module) -> "LinearAttentionPool2d":
        """The exact equivalent of an open_clip `AttentionPool2d` (weights copied, same device and dtype)."""
        tokens, dim = pool.positional_embedding.shape
        side = math.isqrt(tokens - 1)
        new = cls(side, dim, pool.num_heads, pool.c_proj.out_features)
        new.to(device=pool.positional_embedding.device, dtype=pool.positional_embedding.dtype)
        new.load_state_dict(pool.state_dict())
        new.train(pool.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        x = x + self.positional_embedding[None].to(x.dtype)
        h, d = self.num_heads, c // self.num_heads
        q = self.q_proj(x[:, :1]).view(b, 1, h, d).transpose(1, 2)
        k = self.k_proj(x).view(b, -1, h, d).transpose(1, 2)
        v = self.v_proj(x).view(b, -1, h, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.c_proj(out.transpose(1, 2).reshape(b, c))


def _is_attention_pool(module: nn.Module) -> bool:
    try:
        from open_clip.modified_resnet import AttentionPool2d
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return False
    return type(module) is AttentionPool2d


def split_attention(model: nn.Module) -> int:
    """Make every attention layer of `model` run through separate q/k/v `nn.Linear` modules (in place).

    `nn.MultiheadAttention` becomes its exact `QKVAttention` equivalent, open_clip's `AttentionPool2d`
    its exact `LinearAttentionPool2d`. Returns the number of layers replaced. Idempotent: already-split
    layers are left alone.
    """
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, child_name, QKVAttention.from_mha(child))
                count += 1
            elif _is_attention_pool(child):
                setattr(module, child_name, LinearAttentionPool2d.from_pool(child))
                count += 1
    return count


def fuse_attention_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state dict of a split model back to open_clip's own layout (`in_proj_weight`/`in_proj_bias`).

    The result loads into the unmodified open_clip model, e.g. `open_clip.create_model(name, pretrained=file)`.
    """
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    pattern = re.compile(r"^(.*)\.(q_proj|k_proj|v_proj)\.(weight|bias)$")
    for key, value in state_dict.items():
        m = pattern.match(key)
        if m is None or m.group(1).endswith("attnpool"):  # AttentionPool2d keeps separate projections
            out[key] = value
            continue
        pending.setdefault(f"{m.group(1)}.in_proj_{m.group(3)}", {})[m.group(2)] = value
    for key, parts in pending.items():
        if set(parts) != {"q_proj", "k_proj", "v_proj"}:
            raise ValueError(f"incomplete q/k/v projections for {key}: found {sorted(parts)}")
        out[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return out


def lora_target_modules(towers: Iterable[str] = ("vision", "text"), mlp: bool = False, convs: bool = False) -> str:
    """The peft `target_modules` regex for q/k/v (and optionally the MLP) of the given towers.

    Matches open_clip's built-in towers after `split_attention` (`...attn.q_proj`) and Hugging Face
    BERT-style text towers (`...attention.self.query`). peft full-matches the regex against module names.
    `convs` adds the image tower's convolutions (a ResNet's stem, bottleneck and shortcut convolutions, a
    ViT's patch embedding; peft's Conv2d LoRA): beyond the paper, which adapts q/k/v only, for bases
    whose image tower is mostly convolutions (with a ResNet, q/k/v LoRA reaches only its attention pool).
    """
    towers = tuple(towers)
    unknown = set(towers) - set(TOWERS)
    if unknown or not towers:
        raise ValueError(f"towers must be a non-empty subset of {list(TOWERS)}, got {list(towers)}")
    if convs and "vision" not in towers:
        raise ValueError(f"convs adapts the image tower's convolutions, but towers={list(towers)} has no 'vision'")
    leaves = [r"(attn|attnpool)\.(q_proj|k_proj|v_proj)", r"attention\.self\.(query|key|value)"]
    if mlp:
        leaves += [r"mlp\.(c_fc|c_proj)", r"intermediate\.dense", r"output\.dense"]
    leaf = "(" + "|".join(leaves) + ")"
    if set(towers) == {"vision", "text"}:
        pattern = rf".*\.{leaf}"
    elif towers == ("vision",):
        pattern = rf"visual\.(.*\.)?{leaf}"
    else:
        pattern = rf"(?!visual\.).*\.{leaf}"
    if convs:
        pattern = rf"({pattern})|(visual\.(.*\.)?(conv[123]|downsample\.0))"
    return pattern


def make_lora_config(r: int = 8, alpha: float = 1.0, dropout: float = 0.0, towers=("vision", "text"), mlp=False,
                     convs=False):
    """A `peft.LoraConfig` for T-CLIP: rank `r`, `lora_alpha=alpha` (scale alpha / r), q/k/v of `towers`
    (and the MLPs with `mlp`, the image tower's convolutions with `convs`)."""
    from peft import LoraConfig

    if r < 1:
        raise ValueError(f"lora rank r must be >= 1, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora dropout must be in [0, 1), got {dropout}")
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_modules(towers, mlp, convs),
        bias="none",
    )


def lora_parameter_count(model: nn.Module, adapter_name: str) -> dict[str, int]:
    """Trainable LoRA parameters of one adapter, split by tower: {"vision": n, "text": n, "total": n}."""
    counts = {"vision": 0, "text": 0}
    for name, param in model.named_parameters():
        if ".lora_" in name and f".{adapter_name}." in name:
            tower = "vision" if ".visual." in f".{name}" else "text"
            counts[tower] += param.numel()
    counts["total"] = counts["vision"] + counts["text"]
    return counts


@torch.no_grad()
def merged_base_state_dict(peft_model, adapter_name: str | None) -> dict[str, torch.Tensor]:
    """open_clip-layout state dict of the base with one adapter merged in (`None`: the plain base).

    Nothing in `peft_model` is modified. Each adapted linear contributes `W + delta` with peft's own
    `get_delta_weight`, so the result equals the adapted model exactly (up to float rounding).
    """
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    if adapter_name is not None:
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
                deltas[f"{name}.weight"] = module.get_delta_weight(adapter_name)
    state: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = value + deltas[key] if key in deltas else value.clone()
    return fuse_attention_state_dict(state)
