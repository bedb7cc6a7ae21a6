"""Retrieval metrics as plain functions over embeddings (no model needed).

Recall@K, both directions, with the whole gallery, positives defined by image id (so an image may
have several captions, as in LAION's CLIP_benchmark):

- image -> text: a query image is a hit at K if any caption of the same image id is among the K
  highest-scoring captions;
- text -> image: a query caption is a hit at K if an image with its image id is among the K
  highest-scoring images.

Ties (exactly equal scores) are handled deterministically, never by gallery order:

- ``ties="expected"`` (default): the expected Recall@K under a uniformly random order of the tied
  items. With n items scoring strictly above the best positive, and m items tied at its score of
  which p are positives, the hit probability is 0 if K <= n, else 1 - C(m - p, K - n) / C(m, K - n).
- ``ties="pessimistic"``: every tied negative ranks before the positives.

Scores are computed once per distinct embedding row, so identical embeddings (e.g. two images with
the same caption text) always produce exactly tied scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["DEFAULT_KS", "recall_at_k", "hit_probabilities", "retrieval_metrics", "mean_std"]

DEFAULT_KS = (1, 5, 10, 25, 50, 100)


def _scores(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """(Q, G) dot-product scores in float64, computed once per distinct row of each side."""
    q_u, q_inv = torch.unique(queries.double(), dim=0, return_inverse=True)
    g_u, g_inv = torch.unique(gallery.double(), dim=0, return_inverse=True)
    return (q_u @ g_u.T)[q_inv][:, g_inv]


def hit_probabilities(scores: torch.Tensor, positives: torch.Tensor, ks: Sequence[int], ties: str = "expected") -> torch.Tensor:
    """Per-query hit@K (Q, len(ks)) in [0, 1] from scores (Q, G) and a boolean positive mask (Q, G)."""
    if ties not in ("expected", "pessimistic"):
        raise ValueError(f"ties must be 'expected' or 'pessimistic', got {ties!r}")
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} differ in shape")
    has_pos = positives.any(dim=1)
    if not bool(has_pos.all()):
        bad = int((~has_pos).nonzero()[0])
        raise ValueError(f"query {bad} has no positive in the gallery (check the image ids)")
    best = scores.masked_fill(~positives, float("-inf")).max(dim=1, keepdim=True).values
    n_above = (scores > best).sum(dim=1).double()
    tied = scores == best
    m = tied.sum(dim=1).double()
    p = (tied & positives).sum(dim=1).double()
    out = []
    for k in ks:
        j = k - n_above
        if ties == "pessimistic":
            hit = (n_above + (m - p) + 1 <= k).double()
        else:
            # P(first positive within the first j of the m tied) = 1 - C(m-p, j) / C(m, j), for 0 < j <= m-p.
            jj = j.clamp(min=0)
            inside = (jj > 0) & (jj <= m - p)
            jc = torch.where(inside, jj, torch.zeros_like(jj))
            log_ratio = (
                torch.lgamma(m - p + 1) - torch.lgamma(m - p - jc + 1) - torch.lgamma(m + 1) + torch.lgamma(m - jc + 1)
            )
            hit = torch.where(inside, 1.0 - torch.exp(log_ratio), (jj > m - p).double())
        out.append(hit)
    return torch.stack(out, dim=1)


def recall_at_k(
    image_emb: torch.Tensor | np.ndarray,
    text_emb: torch.Tensor | np.ndarray,
    image_ids: Sequence,
    text_ids: Sequence,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "expected",
) -> dict[str, dict[int, float]]:
    """Recall@K both ways: {"i2t": {K: r}, "t2i": {K: r}}, r in [0, 1].

    image_emb (N_img, D) and text_emb (N_txt, D) should be L2-normalised (scores are dot products);
    image_ids (N_img) and text_ids (N_txt, the image id of each caption) define the positives.
    """
    image_emb = torch.as_tensor(np.asarray(image_emb) if not isinstance(image_emb, torch.Tensor) else image_emb)
    text_emb = torch.as_tensor(np.asarray(text_emb) if not isinstance(text_emb, torch.Tensor) else text_emb)
    if image_emb.shape[0] != len(image_ids) or text_emb.shape[0] != len(text_ids):
        raise ValueError(
            f"{image_emb.shape[0]} image embeddings vs {len(image_ids)} image ids, "
            f"{text_emb.shape[0]} text embeddings vs {len(text_ids)} text ids"
        )
    codes = {v: i for i, v in enumerate(dict.fromkeys(list(image_ids) + list(text_ids)))}
    img_codes = torch.tensor([codes[v] for v in image_ids])
    txt_codes = torch.tensor([codes[v] for v in text_ids])
    positives = img_codes[:, None] == txt_codes[None, :]  # (N_img, N_txt)
    scores = _scores(image_emb, text_emb)
    ks = [int(k) for k in ks]
    i2t = hit_probabilities(scores, positives, ks, ties).mean(dim=0)
    t2i = hit_probabilities(scores.T.contiguous(), positives.T.contiguous(), ks, ties).mean(dim=0)
    return {
        "i2t": {k: float(v) for k, v in zip(ks, i2t)},
        "t2i": {k: float(v) for k, v in zip(ks, t2i)},
    }


def retrieval_metrics(*args, **kwargs) -> dict[str, float]:
    """`recall_at_k` flattened to {"i2t_R@1": r, ..., "t2i_R@100": r, "mean_R@1": r} (for logs/tables)."""
    rec = recall_at_k(*args, **kwargs)
    out = {f"{d}_R@{k}": v for d in ("i2t", "t2i") for k, v in rec[d].items()}
    if 1 in rec["i2t"]:
        out["mean_R@1"] = (rec["i2t"][1] + rec["t2i"][1]) / 2
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_std of no values")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
