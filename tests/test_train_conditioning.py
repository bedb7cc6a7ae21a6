"""The conditioning measurement's statistics (thermgen.train.conditioning): own-prompt ranks, paired differences."""

import numpy as np

from thermgen.metrics.tclip_metrics import text_alignment
from thermgen.train.conditioning import compare_modes, own_prompt_ranks, paired_difference


def test_own_prompt_rank_one_is_exactly_an_r1_hit_with_duplicate_prompts_merged():
    rng = np.random.default_rng(0)
    prompts = [f"p{i % 7}" for i in range(20)]  # duplicates: rows sharing a prompt must not compete
    text = rng.normal(size=(7, 16))[[i % 7 for i in range(20)]]
    images = text + 1.5 * rng.normal(size=(20, 16))
    rank, _ = own_prompt_ranks(images, text, prompts)
    assert rank.min() >= 1 and rank.max() <= 7
    assert np.mean(rank == 1) == text_alignment(images, text, prompts)["r1"]


def test_own_prompt_rank_counts_the_distinct_prompts_closer_than_the_own():
    text = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    images = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # image 0 is nearest prompt 2, then 1, then its own
    rank, cos = own_prompt_ranks(images, text, ["a", "b", "c"])
    assert rank.tolist() == [3, 2, 1]
    np.testing.assert_allclose(cos, [0.0, 0.8, 1.0])


def test_paired_difference_separates_a_consistent_shift_from_noise():
    rng = np.random.default_rng(1)
    b = rng.normal(size=96)
    shifted = paired_difference(b + 0.5 + 0.1 * rng.normal(size=96), b)
    assert shifted["lo"] > 0 and abs(shifted["mean"] - 0.5) < 0.05
    noise = paired_difference(rng.normal(size=96), rng.normal(size=96))
    assert noise["lo"] < 0 < noise["hi"]


def test_every_pair_of_modes_is_compared_first_minus_second():
    rows = {m: {"per_image": {"rank": r, "cosine": [0.5] * 3}} for m, r in
            {"concat": [1, 2, 3], "fused": [1, 1, 1], "global": [2, 2, 2]}.items()}
    pairs = compare_modes(rows, ["concat", "fused", "global"])
    assert [(c["a"], c["b"]) for c in pairs] == [("concat", "fused"), ("concat", "global"), ("fused", "global")]
    assert pairs[0]["rank_mean"]["mean"] == 1.0 and pairs[2]["r1"]["mean"] == 1.0
