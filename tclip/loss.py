"""Symmetric InfoNCE (the CLIP loss) with a learnable temperature."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ContrastiveLoss"]


class ContrastiveLoss(nn.Module):
    """CLIP's symmetric cross-entropy over image-text similarities, with a learnable temperature.

    The similarity scale `exp(logit_scale)` starts at 1 / init_temperature and is capped at
    `max_logit_scale` (100, as in CLIP). Under several processes the features of all ranks are
    gathered (with gradients), so each rank's loss sees the global batch as negatives; the
    computation is open_clip's `ClipLoss`.

    forward(image_features (B, D), text_features (B, D), both L2-normalised; row i of each is a pair)
    -> scalar loss.
    """

    def __init__(self, init_temperature: float = 0.07, max_logit_scale: float = 100.0, rank: int = 0, world_size: int = 1):
        super().__init__()
        from open_clip.loss import ClipLoss

        if init_temperature <= 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_logit_scale = float(max_logit_scale)
        self._clip_loss = ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)

    @property
    def scale(self) -> torch.Tensor:
        """The current similarity scale exp(logit_scale), capped."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        if image_features.shape != text_features.shape:
            raise ValueError(f"feature shapes differ: {tuple(image_features.shape)} vs {tuple(text_features.shape)}")
        return self._clip_loss(image_features, text_features, self.scale)
