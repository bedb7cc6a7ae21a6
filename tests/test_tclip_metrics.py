"""Recall@K against an independent brute force: several captions per image, ties, both directions."""

import itertools

import numpy as np
import pytest
import torch

from tclip.metrics import mean_std, recall_at_k, retrieval_metrics

KS = (1, 2, 3, 5)


def brute_force(scores: np.ndarray, positive: np.ndarray, k: int, ties: str) -> float:
    """Average over queries of hit@k, enumerating every order of the items tied with the best positive."""
    hits = []
    for s, pos in zip(scores, positive):
        best = max(s[j] for j in range(len(s)) if pos[j])
        above = [j for j in range(len(s)) if s[j] > best]
        tied = [j for j in range(len(s)) if s[j] == best]
        if ties == "pessimistic":
            tied_order = sorted(tied, key=lambda j: pos[j])  # negatives (False) first
            order = above + tied_order
            hits.append(float(any(pos[j] for j in order[:k])))
            continue
        outcomes = []
        for perm in itertools.permutations(tied):
            order = above + list(perm)
            outcomes.append(float(any(pos[j] for j in order[:k])))
        hits.append(float(np.mean(outcomes)))
    return float(np.mean(hits))


def _check(img, txt, image_ids, text_ids, ties):
    rec = recall_at_k(img, txt, image_ids, text_ids, ks=KS, ties=ties)
    scores = (np.asarray(img, dtype=np.float64) @ np.asarray(txt, dtype=np.float64).T)
    pos = np.array([[i == t for t in text_ids] for i in image_ids])
    for k in KS:
        assert rec["i2t"][k] == pytest.approx(brute_force(scores, pos, k, ties), abs=1e-9), ("i2t", k)
        assert rec["t2i"][k] == pytest.approx(brute_force(scores.T, pos.T, k, ties), abs=1e-9), ("t2i", k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_brute_force_with_several_captions_per_image(seed):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(6, 4))
    text_ids = [f"im{i}" for i in range(6)] + [f"im{i}" for i in rng.integers(0, 6, size=8)]
    txt = rng.normal(size=(len(text_ids), 4))
    _check(img, txt, [f"im{i}" for i in range(6)], text_ids, "expected")


@pytest.mark.parametrize("ties", ["expected", "pessimistic"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ties_match_brute_force_enumeration(seed, ties):
    rng = np.random.default_rng(seed)
    # Integer embeddings from a few patterns: many exactly equal scores, including image-image and text-text duplicates.
    patterns = rng.integers(-1, 2, size=(3, 3)).astype(np.float64)
    img = patterns[rng.integers(0, 3, size=5)]
    text_ids = [0, 1, 2, 3, 4, 0, 2, 2]
    txt = patterns[rng.integers(0, 3, size=len(text_ids))]
    _check(img, txt, list(range(5)), text_ids, ties)


def test_identical_captions_of_two_images_count_half_a_hit_in_expectation():
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    txt = np.array([[1.0, 0.0], [1.0, 0.0]])  # both captions read the same
    rec = recall_at_k(img, txt, ["a", "b"], ["a", "b"], ks=(1,))
    # Each image scores its own caption exactly as the other image's caption: a coin flip at R@1.
    assert rec["i2t"][1] == pytest.approx(0.5)
    assert rec["i2t"][1] == recall_at_k(img, txt[::-1].copy(), ["a", "b"], ["b", "a"], ks=(1,))["i2t"][1]
    pess = recall_at_k(img, txt, ["a", "b"], ["a", "b"], ks=(1,), ties="pessimistic")
    assert pess["i2t"][1] == 0.0


def test_perfect_embeddings_give_recall_one_and_shuffled_ids_do_not():
    emb = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    ids = list(range(20))
    rec = recall_at_k(emb, emb, ids, ids, ks=(1, 5))
    assert rec["i2t"][1] == 1.0 and rec["t2i"][1] == 1.0
    shuffled = recall_at_k(emb, emb, ids, ids[1:] + ids[:1], ks=(1,))
    assert shuffled["i2t"][1] == 0.0


def test_recall_at_k_at_least_gallery_size_is_one():
    rng = np.random.default_rng(0)
    rec = recall_at_k(rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), range(4), range(4), ks=(4, 10))
    assert rec["i2t"] == {4: 1.0, 10: 1.0} and rec["t2i"] == {4: 1.0, 10: 1.0}


def test_a_query_without_positive_is_an_error():
    with pytest.raises(ValueError, match="no positive"):
        recall_at_k(np.eye(2), np.eye(2), ["a", "b"], ["a", "c"], ks=(1,))


def test_mismatched_ids_are_an_error():
    with pytest.raises(ValueError, match="image ids"):
        recall_at_k(np.eye(3), np.eye(2), ["a", "b"], ["a", "b"], ks=(1,))


def test_flat_metrics_and_mean_std():
    rec = retrieval_metrics(np.eye(3), np.eye(3), range(3), range(3), ks=(1, 5))
    assert rec["i2t_R@1"] == 1.0 and rec["t2i_R@5"] == 1.0 and rec["mean_R@1"] == 1.0
    assert mean_std([0.1, 0.3]) == pytest.approx((0.2, 0.1414213562))
    assert mean_std([0.5]) == (0.5, 0.0)
