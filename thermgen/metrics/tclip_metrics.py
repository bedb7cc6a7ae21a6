"""Generation metrics in the thermal domain, with T-CLIP (contract 5) as the feature network.

Inception features were learnt on RGB photographs; the paper itself notes that FID and CLIP score
therefore judge thermal images with the wrong eyes. T-CLIP's image tower was adapted to thermal
images, so it gives two complementary measures:

- **T-CLIP FD / KID**: the Frechet distance (and KID) between real and generated images on T-CLIP
  image embeddings (``encode_image(variant="dual")``, L2-normalised, ``(N, D)``), computed with
  clean-fid's ``fid_from_feats`` / ``kernel_distance`` exactly like the Inception FID.
- **Text alignment**: the mean cosine between each generated image and the prompt it was
  generated from, and the Recall@1 of each generated image against its own prompt among all the
  (distinct) prompts -- does the image say what it was asked to say, as read by T-CLIP. The same
  two numbers on the real images and their own captions (when the real side is a manifest) give
  the reference a perfect generator would reach.

The metric functions (:func:`text_alignment`) are plain functions over embeddings, testable
without a model, as in open_clip's ``get_clip_metrics``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from thermgen.metrics.features import TCLIPImageFeatures
from thermgen.metrics.fid import ImageSet, compute_metrics, fid_from_features, kid_from_features, size_warnings

TCLIP_REPORT_KEYS: dict[str, str] = {
    "dir": "str, the T-CLIP folder",
    "feature": "str, 'tclip-dual' (image embeddings: fused 0.8 global + 0.2 fine adapters, L2-normalised)",
    "feature_dim": "int, embedding width D",
    "fd": "float, Frechet distance between real and generated T-CLIP image embeddings (clean-fid's fid_from_feats)",
    "kid_mean": "float, KID on the same embeddings (clean-fid's kernel_distance), mean over subsets",
    "kid_std": "float, standard deviation over the KID subsets",
    "kid_subsets": "int", "kid_subset_size": "int",
    "n_real": "int", "n_fake": "int",
    "real_cache": "'hit'|'miss'|'off' (reference-feature cache of the real side), 'reused' when the main feature was this T-CLIP",
    "text_alignment": "dict or null (no prompts): cosine_mean, cosine_std, r1, r1_chance, n, n_unique_prompts, text_variant, image_variant",
    "real_text_alignment": "dict or null: the same on the real images and their own manifest captions (a reference ceiling)",
}


@torch.no_grad()
def encode_prompts(model: nn.Module, prompts: Sequence[str], prompts_fine: Sequence[str] | None = None, batch_size: int = 64) -> tuple[np.ndarray, str]:
    """T-CLIP text embeddings ``(N, D)`` (L2-normalised) and the text variant used.

    With fine prompts: ``"dual"`` (global prompt -> global adapter, fine prompt -> fine adapter,
    fused). Without: ``"tclip-global"`` (the one prompt through both adapters, fused), the paper's
    fallback when only one caption exists.
    """
    variant = "dual" if prompts_fine is not None else "tclip-global"
    out = []
    for i in range(0, len(prompts), batch_size):
        texts = list(prompts[i : i + batch_size])
        fine = list(prompts_fine[i : i + batch_size]) if prompts_fine is not None else None
        out.append(model.encode_text(texts, texts_fine=fine, variant=variant).float().cpu().numpy())
    return np.concatenate(out), variant


def text_alignment(image_emb: np.ndarray, text_emb: np.ndarray, prompts: Sequence[str]) -> dict[str, Any]:
    """Agreement between images ``(N, D)`` and the prompts they were made from (row i <-> row i).

    Embeddings are L2-normalised here (again). ``cosine_mean``/``cosine_std``: cosine of each image
    with its own prompt. ``r1``: fraction of images whose most similar prompt, among the distinct
    prompts, is their own; identical prompts are merged first, so images that share a prompt are
    not penalised for matching each other's copy. ``r1_chance`` = 1 / number of distinct prompts.
    """
    image_emb = np.asarray(image_emb, dtype=np.float64)
    text_emb = np.asarray(text_emb, dtype=np.float64)
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2 or len(prompts) != image_emb.shape[0]:
        raise ValueError(f"need images (N, D), texts (N, D) and N prompts; got {image_emb.shape}, {text_emb.shape}, {len(prompts)}")
    if image_emb.shape[0] == 0:
        raise ValueError("text alignment needs at least one image")
    img = image_emb / np.linalg.norm(image_emb, axis=1, keepdims=True).clip(1e-12)
    txt = text_emb / np.linalg.norm(text_emb, axis=1, keepdims=True).clip(1e-12)
    cos = (img * txt).sum(axis=1)
    first: dict[str, int] = {}
    for i, p in enumerate(prompts):
        first.setdefault(p, i)
    unique_rows = list(first.values())
    own = np.array([unique_rows.index(first[p]) for p in prompts])
    sims = img @ txt[unique_rows].T  # (N, U)
    r1 = float((sims.argmax(axis=1) == own).mean())
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_std": float(cos.std(ddof=1)) if len(cos) > 1 else 0.0,
        "r1": r1,
        "r1_chance": 1.0 / len(unique_rows),
        "n": int(len(prompts)),
        "n_unique_prompts": len(unique_rows),
    }


def tclip_report(
    tclip_dir: str | os.PathLike | TCLIPImageFeatures,
    real: ImageSet,
    fake: ImageSet,
    prompts: Sequence[str] | None,
    prompts_fine: Sequence[str] | None = None,
    *,
    size: tuple[int, int],
    features: tuple[np.ndarray, np.ndarray] | None = None,
    device: torch.device | str | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    **metric_kw: Any,
) -> dict[str, Any]:
    """T-CLIP FD/KID and text alignment for one generated set (keys: :data:`TCLIP_REPORT_KEYS`,
    plus ``warnings``, which the caller merges into its own list).

    ``tclip_dir``: a T-CLIP folder, or a :class:`TCLIPImageFeatures` already built on one (reused).
    ``features``: ``(real, fake)`` T-CLIP embeddings already computed in this order of images
    (skips recomputing them). ``metric_kw``: norm, crop, color, batch_size, num_workers, cache_dir,
    use_cache, progress (see :func:`thermgen.metrics.fid.compute_metrics`).
    """
    extractor = tclip_dir if isinstance(tclip_dir, TCLIPImageFeatures) else TCLIPImageFeatures(tclip_dir, device=device)
    if features is None:
        m = compute_metrics(real, fake, feature=extractor, size=size, device=device, kid_subsets=kid_subsets,
                            kid_subset_size=kid_subset_size, seed=seed, return_features=True, **metric_kw)
        real_feats, fake_feats, real_cache = m["_real_features"], m["_fake_features"], m["real"]["cache"]
    else:
        real_feats, fake_feats = features
        real_cache = "reused"
    dim = int(real_feats.shape[1])
    kid_mean, kid_std, m_sub = kid_from_features(real_feats, fake_feats, kid_subsets, kid_subset_size, seed)
    out: dict[str, Any] = {
        "dir": str(extractor.tclip_dir),
        "feature": extractor.name,
        "feature_dim": dim,
        "fd": fid_from_features(real_feats, fake_feats),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subsets": kid_subsets,
        "kid_subset_size": m_sub,
        "n_real": int(real_feats.shape[0]),
        "n_fake": int(fake_feats.shape[0]),
        "real_cache": real_cache,
        "text_alignment": None,
        "real_text_alignment": None,
    }
    model = extractor.model
    if prompts is not None:
        text, variant = encode_prompts(model, prompts, prompts_fine)
        out["text_alignment"] = {**text_alignment(fake_feats, text, prompts), "text_variant": variant, "image_variant": extractor.variant}
    caps = [real.captions.get(k, {}) for k in real.keys]
    if real.captions and all("global" in c for c in caps):
        g = [c["global"] for c in caps]
        f = [c["fine"] for c in caps] if all("fine" in c for c in caps) else None
        text, variant = encode_prompts(model, g, f)
        out["real_text_alignment"] = {**text_alignment(real_feats, text, g), "text_variant": variant, "image_variant": extractor.variant}
    out["warnings"] = size_warnings(out["n_real"], out["n_fake"], dim, "T-CLIP FD")
    return out
