"""Does a fine-tuned model copy its curated training images? A near-copy check.

For each image generated from a training caption, find the most similar curated image in a
feature space (cosine similarity). A generation is a *near-copy* when its nearest curated image
is closer than a fresh drawing of a curated scene usually gets: the threshold is the ``quantile``
(default 0.95) of the same nearest-curated similarity for a re-render of each curated scene with
another seed (new position, scale and colour jitter). The null goes through the same
nearest-neighbour search as the generations, so an honest new picture of a curated scene is
flagged about 5% of the time; a model that reproduces its training pixels far more often.

The feature space must see what a copy reproduces. On the mini-world that is pixels (position,
pose, jitter); the oracle's features are built to ignore exactly those, so under them a fresh
render of a scene is as close as a copy (similarity 0.996) and nothing can be told apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equigen.audit.quality import nearest_similarity
from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS


def near_copy_threshold(null_similarities: np.ndarray, quantile: float = 0.95) -> float:
    """The similarity that only ``1 - quantile`` of honest fresh drawings reach."""
    values = np.asarray(null_similarities, dtype=float)
    if values.size == 0:
        raise ValueError("near_copy_threshold needs at least one similarity of a fresh drawing")
    return float(np.quantile(values, quantile))


@dataclass
class MemorizationResult:
    rate: float  # share of generations flagged as near-copies
    threshold: float
    nearest: np.ndarray  # each generation's similarity to its nearest curated image
    flagged: np.ndarray  # bool per generation

    def as_dict(self) -> dict:
        return {"rate": self.rate, "threshold": self.threshold, "n": int(self.nearest.size),
                "flagged": int(self.flagged.sum()),
                "nearest_similarity_mean": float(self.nearest.mean())}


def memorization_check(generated: np.ndarray, curated: np.ndarray, threshold: float) -> MemorizationResult:
    """Near-copy rate of ``generated`` features against ``curated`` features."""
    nearest = nearest_similarity(np.asarray(generated, float), np.asarray(curated, float))
    flagged = nearest >= threshold
    return MemorizationResult(float(flagged.mean()), threshold, nearest, flagged)


def world_rerender_similarities(records, features, curated_features: np.ndarray,
                                seed_offset: int = 7_919) -> np.ndarray:
    """Mini-world null for the near-copy check: each curated scene re-rendered with another seed,
    and that re-render's similarity to its nearest curated image (``curated_features``, one row per
    record; its own original is among them).

    ``records`` are rows of a mini-world export (with ``seed`` and the scene attributes);
    ``features`` maps a uint8 array of images (n, H, W, 3) to an (n, d) feature array.
    """
    from equigen.world.render import render_rows

    rows = [r.model_dump() if hasattr(r, "model_dump") else dict(r) for r in records]
    again = render_rows([{**row, "seed": int(row["seed"]) + seed_offset} for row in rows])
    return nearest_similarity(np.asarray(features(again), float), np.asarray(curated_features, float))


def training_caption_images(pipe, records, seed: int = 0,
                            guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
                            steps: int = DEFAULT_STEPS, batch_size: int = 40,
                            draws: int = 1, lora_scope=None) -> np.ndarray:
    """``draws`` generations per training caption (image ``image_seed(seed, i, j)`` of row i),
    uint8, all of row 0's first (``lora_scope``: as :func:`apply_lora` returned it)."""
    from equigen.models.generate import generate_images, image_seed

    images = generate_images(pipe, [r.text for r in records for _ in range(draws)],
                             [image_seed(seed, i, j) for i in range(len(records)) for j in range(draws)],
                             guidance_scale=guidance_scale, steps=steps, batch_size=batch_size,
                             description="training captions", lora_scope=lora_scope)
    return np.stack([np.asarray(image.convert("RGB")) for image in images])


def _uint8_to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255


def oracle_features():
    """The mini-world oracle's penultimate features as a ``uint8 images -> (n, d)`` function."""
    from equigen.world.oracle import OracleAnnotator

    oracle = OracleAnnotator.load()
    return lambda images: oracle.features(_uint8_to_tensor(images)).numpy()


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Each image's pixels minus their mean: cosine similarity is then the pixels' correlation."""
    flat = np.asarray(images, float).reshape(len(images), -1)
    return flat - flat.mean(axis=1, keepdims=True)


def feature_function(name: str = "pixels"):
    """``uint8 images -> (n, d)`` features: ``pixels`` (the mini-world's copy detector),
    ``oracle`` (mini-world attributes) or ``NAME[:WEIGHTS]`` of the perceptual registry
    (``equigen.methods.scoft.perceptual``)."""
    import torch

    from equigen.methods.scoft.perceptual import PerceptualSpec, build_perceptual

    if name == "pixels":
        return pixel_features
    if name == "oracle":
        return oracle_features()
    kind, _, weights = name.partition(":")
    net = build_perceptual(PerceptualSpec(name=kind, weights=weights or None)).eval()

    def features(images: np.ndarray) -> np.ndarray:
        x = _uint8_to_tensor(images)
        with torch.no_grad():
            return torch.cat([net.embed(x[s : s + 64]) for s in range(0, len(x), 64)]).numpy()

    return features


def near_copies(generated: np.ndarray, curated: np.ndarray, records, features,
                threshold: float | None = None) -> dict:
    """Near-copy rate of ``generated`` (one per curated row, uint8) against the ``curated``
    images, with its 95% Wilson interval. The threshold, unless given, is calibrated on
    re-renders of the curated scenes, which only a mini-world export has."""
    from equigen.audit.metrics import wilson_interval

    calibrated = threshold is None
    curated_features = features(curated)
    if calibrated:
        if any(getattr(r, "seed", None) is None for r in records):
            raise ValueError("these curated rows are not mini-world renders (no scene seed), so "
                             "the near-copy threshold cannot be calibrated: give one")
        threshold = near_copy_threshold(world_rerender_similarities(records, features, curated_features))
    result = memorization_check(features(generated), curated_features, threshold)
    return {**result.as_dict(), "threshold_source": "re-rendered curated scenes, q0.95" if calibrated
            else "given", "interval": list(wilson_interval(int(result.flagged.sum()),
                                                           result.nearest.size))}


def caption_bootstrap(values: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of a (captions, draws) array with a percentile interval that resamples captions with
    all their draws: several generations of one caption are not independent (a model that copies
    an image copies it for most draws), so an interval treating them as independent is too narrow.
    Also for a paired difference of two models' flags on the same seeds."""
    values = np.asarray(values, float)
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(f"caption_bootstrap needs a (captions, draws) array, got shape {values.shape}")
    per_caption = values.mean(axis=1)
    rng = np.random.default_rng(seed)
    draws = per_caption[rng.integers(0, len(per_caption), (n_boot, len(per_caption)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(per_caption.mean()), float(low), float(high)
