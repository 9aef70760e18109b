"""Representation metrics, each with its formula, and bootstrap intervals over images.

Notation: ``p`` is the distribution of an attribute's K groups among a prompt's images (shares of
hard labels, or the mean of annotator probabilities), ``u`` the target (uniform unless declared).

- FD, fairness discrepancy [Choi et al. 2020]:   FD(p, u)  = ||p - u||_2
- KL divergence to the target [ITI-GEN]:          KL(p||u) = sum_k p_k log(p_k / u_k)   (0 log 0 = 0)
- MAD, mean absolute deviation [DALL-Eval]:       MAD(p)   = 1/K sum_k |p_k - 1/K|
- normalised entropy:                             H(p) / log K = -sum_k p_k log p_k / log K
- total variation:                                TV(p, q) = 1/2 sum_k |p_k - q_k|

Intersectional versions use the joint distribution over two attributes (K1 * K2 groups) against
the product of their targets. Every figure comes with a 95% percentile bootstrap interval over
images (bias-corrected percentiles, so an interval never misses its own estimate); figures over
several prompts are means, bootstrapped by resampling within each prompt.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]


def distribution(labels: np.ndarray, k: int) -> np.ndarray:
    """Share of each of ``k`` groups among integer ``labels``."""
    return np.bincount(np.asarray(labels), minlength=k)[:k] / max(1, len(labels))


def uniform(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


def fairness_discrepancy(p: np.ndarray, u: np.ndarray) -> float:
    """FD = ||p - u||_2."""
    return float(np.linalg.norm(np.asarray(p, float) - np.asarray(u, float)))


def kl_to_target(p: np.ndarray, u: np.ndarray) -> float:
    """KL(p || u) = sum_k p_k log(p_k / u_k), with 0 log 0 = 0 (nats)."""
    p, u = np.asarray(p, float), np.asarray(u, float)
    mask = p > 0
    if np.any(u[mask] == 0):
        return float("inf")
    return float(np.sum(p[mask] * np.log(p[mask] / u[mask])))


def mean_absolute_deviation(p: np.ndarray, u: np.ndarray | None = None) -> float:
    """MAD = 1/K sum_k |p_k - mean(p)| (mean(p) = 1/K); ``u`` is ignored (DALL-Eval's definition)."""
    p = np.asarray(p, float)
    return float(np.mean(np.abs(p - p.mean())))


def normalized_entropy(p: np.ndarray, u: np.ndarray | None = None) -> float:
    """H(p) / log K, in [0, 1]: 1 is uniform, 0 a single group."""
    p = np.asarray(p, float)
    nz = p[p > 0]
    return float(-np.sum(nz * np.log(nz)) / np.log(len(p)))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """TV(p, q) = 1/2 sum_k |p_k - q_k|, in [0, 1]."""
    return 0.5 * float(np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


METRICS: dict[str, Metric] = {
    "fd": fairness_discrepancy,
    "kl": kl_to_target,
    "mad": mean_absolute_deviation,
    "entropy": normalized_entropy,
    "tv": total_variation,
}


def joint_labels(a: np.ndarray, b: np.ndarray, k_b: int) -> np.ndarray:
    """Labels of the intersection of two attributes: a * K_b + b (K_a * K_b groups)."""
    return np.asarray(a) * k_b + np.asarray(b)


def joint_target(u_a: np.ndarray, u_b: np.ndarray) -> np.ndarray:
    """Target over the intersection: the product of the two targets (independence)."""
    return np.outer(u_a, u_b).ravel()


def bootstrap_interval(
    labels: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high): bias-corrected percentile bootstrap over images (rows of ``labels``)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    estimate = statistic(labels)
    draws = np.array([statistic(labels[rng.integers(0, len(labels), len(labels))])
                      for _ in range(n_boot)])
    low, high = bias_corrected_percentiles(draws, estimate, level)
    return float(estimate), low, high


def bias_corrected_percentiles(draws: np.ndarray, estimate: float,
                               level: float = 0.95) -> tuple[float, float]:
    """The BC percentile interval [Efron 1987]: the percentiles are shifted by
    z0 = Phi^-1(share of draws below the estimate, ties counted half).

    FD, KL, MAD and TV are biased upward at finite n, so their bootstrap draws sit above the
    estimate; a plain percentile interval can then miss its own estimate (e.g. 0.02 [0.03, 0.20]
    for a balanced sample). The correction moves the interval back; for an unbiased, symmetric
    statistic (a share) z0 ~ 0 and it is the plain percentile interval. In the degenerate case
    where even the shifted percentiles miss the estimate, the interval is widened to include it.
    """
    draws = np.asarray(draws, float)
    if not np.all(np.isfinite(draws)):
        return float("nan"), float("nan")
    below = np.mean(draws < estimate) + 0.5 * np.mean(draws == estimate)
    below = float(np.clip(below, 1 / (2 * len(draws)), 1 - 1 / (2 * len(draws))))
    normal = NormalDist()
    z0 = normal.inv_cdf(below)
    z = normal.inv_cdf(0.5 + level / 2)
    quantiles = [normal.cdf(2 * z0 - z), normal.cdf(2 * z0 + z)]
    low, high = np.quantile(draws, quantiles)
    return float(min(low, estimate)), float(max(high, estimate))


def metric_interval(labels: np.ndarray, k: int, metric: Metric, target: np.ndarray | None = None,
                    **kwargs) -> tuple[float, float, float]:
    """A metric of the label distribution with its bootstrap interval."""
    target = uniform(k) if target is None else np.asarray(target, float)
    return bootstrap_interval(labels, lambda l: metric(distribution(l, k), target), **kwargs)


def mean_over_prompts(
    labels_per_prompt: Sequence[np.ndarray],
    k: int,
    metric: Metric,
    target: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of a metric over prompts, with a bootstrap that resamples images within each prompt."""
    target = uniform(k) if target is None else np.asarray(target, float)
    rng = np.random.default_rng(seed)
    groups = [np.asarray(l) for l in labels_per_prompt]
    estimate = float(np.mean([metric(distribution(l, k), target) for l in groups]))
    draws = np.array([
        np.mean([metric(distribution(l[rng.integers(0, len(l), len(l))], k), target)
                 for l in groups])
        for _ in range(n_boot)
    ])
    low, high = bias_corrected_percentiles(draws, estimate, level)
    return estimate, low, high


def paired_mean_change(
    after_per_prompt: Sequence[np.ndarray],
    before_per_prompt: Sequence[np.ndarray],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Change of a per-image value (e.g. 0/1 hits) from ``before`` to ``after``, averaged within
    each prompt then over prompts, with a *paired* bootstrap interval.

    Image i of a prompt must come from the same seed in both runs: the same image indices are
    then resampled for both, so the interval is that of the change itself, much narrower than
    either run's own interval when the two models draw similar images from a seed.
    """
    diffs = []
    for j, (after, before) in enumerate(zip(after_per_prompt, before_per_prompt, strict=True)):
        after, before = np.asarray(after, float), np.asarray(before, float)
        if after.shape != before.shape or after.ndim != 1 or len(after) == 0:
            raise ValueError(f"prompt {j}: paired runs need the same non-empty number of images "
                             f"per prompt, got {after.shape} and {before.shape}")
        diffs.append(after - before)
    rng = np.random.default_rng(seed)
    estimate = float(np.mean([d.mean() for d in diffs]))
    draws = np.array([np.mean([d[rng.integers(0, len(d), len(d))].mean() for d in diffs])
                      for _ in range(n_boot)])
    low, high = bias_corrected_percentiles(draws, estimate, level)
    return estimate, low, high


def sampling_floor(metric: Metric, target: np.ndarray, n: int, draws: int = 1000,
                   seed: int = 0) -> float:
    """The metric's mean for a model that samples exactly from ``target``, at ``n`` images.

    FD, KL, MAD and TV are biased upward at finite n (a perfectly fair model scores above 0), and
    a percentile bootstrap inherits that bias; this floor says which values mean nothing at this n.
    """
    target = np.asarray(target, float)
    rng = np.random.default_rng(seed)
    return float(np.mean([metric(rng.multinomial(n, target) / n, target) for _ in range(draws)]))


def guidance_tilt(conditional: np.ndarray, marginal: np.ndarray, scale: float) -> np.ndarray:
    """What classifier-free guidance at ``scale`` w does to a group distribution, for a perfect model:
    p_w(k) = p(k|c)^w p(k)^(1-w) / Z, the group shares of p(x|c)^w p(x)^(1-w) / Z, the
    distribution guidance aims at (guiding the score at every noise level only approximates it).

    ``conditional`` is p(group | prompt) in the training data, ``marginal`` p(group) over all of it
    (what the unconditional branch learned). w = 1 returns ``conditional``; w > 1 sharpens it toward
    the groups over-represented for this prompt, so even a faithful model drifts from its data.
    """
    p, m = np.asarray(conditional, float), np.asarray(marginal, float)
    if p.shape != m.shape:
        raise ValueError(f"conditional {p.shape} and marginal {m.shape} must have the same shape")
    if np.any(m[p > 0] <= 0):
        raise ValueError("the marginal must be positive wherever the conditional is")
    tilted = np.where(p > 0, p ** scale * np.where(m > 0, m, 1.0) ** (1.0 - scale), 0.0)
    return tilted / tilted.sum()


def expected_tv_noise(p: np.ndarray, n: int) -> float:
    """E[TV(p_hat, p)] for p_hat the shares of n draws from p (normal approximation):
    1/2 sum_k sqrt(2 p_k (1 - p_k) / (pi n)). Below this, a TV says nothing."""
    p = np.asarray(p, float)
    return float(0.5 * np.sqrt(2 * p * (1 - p) / (np.pi * n)).sum())


def chance_all_within_tv(drawn_from: Sequence[np.ndarray], targets: Sequence[np.ndarray], n: int,
                         bar: float, trials: int = 20_000, seed: int = 0) -> float:
    """The chance that ``n`` draws from *each* ``drawn_from[i]`` give shares within TV ``bar`` of
    ``targets[i]``, all at once (Monte Carlo, ``trials`` repeats): how often a model that draws
    exactly ``drawn_from`` passes a per-group TV bar measured on ``n`` samples each."""
    if len(drawn_from) != len(targets) or not len(targets):
        raise ValueError(f"{len(drawn_from)} distributions but {len(targets)} targets")
    rng = np.random.default_rng(seed)
    passed = np.ones(trials, dtype=bool)
    for p, target in zip(drawn_from, targets):
        p, target = np.asarray(p, float), np.asarray(target, float)
        shares = rng.multinomial(n, p / p.sum(), size=trials) / n
        # shares are multiples of 1/n: a TV often lands exactly on the bar; rounding must not fail
        passed &= 0.5 * np.abs(shares - target).sum(axis=1) <= bar + 1e-12
    return float(passed.mean())


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """(k / n, low, high): the Wilson score interval of a proportion, which stays inside [0, 1]
    and is not empty at k = 0 or k = n (where a bootstrap collapses to a point)::

        centre = (p + z^2 / 2n) / (1 + z^2 / n),  half = z sqrt(p(1-p)/n + z^2 / 4n^2) / (1 + z^2 / n)
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0, got {n}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)
