"""Image quality, diversity and memorization, on features from a configurable extractor.

- FID / KID: torchmetrics, with the feature extractor passed in (the Inception weights cannot be
  downloaded here; the mini-world uses its oracle's penultimate features, real models CLIP's).
- Diversity: mean pairwise cosine distance, and the Vendi score [Friedman & Dieng 2023]:
  exp(-sum_i l_i log l_i) for l the eigenvalues of K / n, K the cosine-similarity matrix;
  1 for n identical images, n for n mutually orthogonal ones.
- Memorization: share of generations whose nearest training image (cosine similarity of
  features) is above a threshold calibrated on known near-duplicates.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # float images [N, 3, H, W] in [0, 1] -> [N, D]


class _FeatureModule(torch.nn.Module):
    def __init__(self, fn: FeatureFn):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def fid_kid(real: torch.Tensor, fake: torch.Tensor, features: FeatureFn,
            kid_subset_size: int | None = None) -> dict[str, float]:
    """FID and KID (mean, std) between two image sets ([N, 3, H, W] floats in [0, 1])."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    module = _FeatureModule(features)
    fid = FrechetInceptionDistance(feature=module, normalize=True,
                                   input_img_size=tuple(real.shape[1:]))
    subset = kid_subset_size or min(len(real), len(fake), 1000) // 2
    kid = KernelInceptionDistance(feature=module, normalize=True, subset_size=max(2, subset))
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


def _normalize(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, float)
    return features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean cosine distance 1 - cos(f_i, f_j) over pairs i != j."""
    f = _normalize(features)
    n = len(f)
    sims = f @ f.T
    return float((n * n - sims.sum()) / (n * (n - 1)))


def vendi_score(features: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K/n), K = cosine-similarity kernel."""
    f = _normalize(features)
    eigenvalues = np.linalg.eigvalsh(f @ f.T / len(f)).clip(0)
    nz = eigenvalues[eigenvalues > 1e-12]
    return float(np.exp(-np.sum(nz * np.log(nz))))


def nearest_similarity(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """For each query, the cosine similarity of its nearest reference."""
    return (_normalize(queries) @ _normalize(references).T).max(axis=1)


def calibrate_threshold(duplicate_similarities: np.ndarray, quantile: float = 0.05) -> float:
    """A threshold that catches (1 - quantile) of known near-duplicate pairs."""
    return float(np.quantile(np.asarray(duplicate_similarities, float), quantile))


def memorization_rate(generated: np.ndarray, training: np.ndarray, threshold: float) -> float:
    """Share of generations closer than ``threshold`` to some training image."""
    return float(np.mean(nearest_similarity(generated, training) >= threshold))
