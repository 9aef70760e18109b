import numpy as np
import pytest
import torch

from equigen.audit.quality import (
    calibrate_threshold,
    fid_kid,
    mean_pairwise_distance,
    memorization_rate,
    nearest_similarity,
    vendi_score,
)


def test_vendi_score_hand_cases():
    assert vendi_score(np.ones((5, 3))) == pytest.approx(1.0)  # identical: one "species"
    assert vendi_score(np.eye(4)) == pytest.approx(4.0)  # orthogonal: four
    # two identical pairs, the pairs orthogonal: K/n has eigenvalues (1/2, 1/2) -> exp(ln 2) = 2
    assert vendi_score(np.array([[1, 0], [1, 0], [0, 1], [0, 1]])) == pytest.approx(2.0)


def test_mean_pairwise_distance_hand_case():
    # pairs: (a,b) cos 1 -> 0, (a,c) and (b,c) cos 0 -> 1: mean over 3 pairs = 2/3
    f = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    assert mean_pairwise_distance(f) == pytest.approx(2 / 3)


def test_memorization_counts_near_copies():
    rng = np.random.default_rng(0)
    training = rng.normal(size=(50, 16))
    copies = training[:10] + 0.01 * rng.normal(size=(10, 16))
    novel = rng.normal(size=(30, 16))
    sims = nearest_similarity(copies, training)
    threshold = calibrate_threshold(sims)
    assert threshold > 0.99
    assert memorization_rate(np.vstack([copies, novel]), training, threshold) == pytest.approx(
        9 / 40, abs=1 / 40)


def test_fid_is_small_for_the_same_distribution_and_large_for_another():
    torch.manual_seed(0)
    projection = torch.randn(3 * 8 * 8, 6)

    def features(x):
        return x.flatten(1) @ projection

    a = torch.rand(200, 3, 8, 8)
    b = torch.rand(200, 3, 8, 8)
    shifted = (torch.rand(200, 3, 8, 8) * 0.5).clamp(0, 1)
    same, other = fid_kid(a, b, features), fid_kid(a, shifted, features)
    assert same["fid"] < other["fid"] / 10
    assert other["kid"] > same["kid"]
