"""Sample scenes and dataset rows from the distributions declared in ``world.yaml``.

Sampling order (each factor from its declared weights): region, occupation, tone given occupation,
setting, style given region. ``declared`` exposes the same probabilities as arrays, so tests (and
reports) compare sampled data against what the YAML declares rather than against numbers copied
into code.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from equigen.world.captions import caption, generic_caption
from equigen.world.scene import STYLES, DistributionSpec, Scene, Weights, WorldSpec, load_world


@dataclass(frozen=True)
class Declared:
    """A distribution's declared probabilities, indexed like the world's name lists."""

    regions: list[str]
    occupations: list[str]
    settings: list[str]
    region: np.ndarray  # P(region)
    occupation: np.ndarray  # P(occupation)
    setting: np.ndarray  # P(setting)
    tone_given_occupation: np.ndarray  # [occupation, tone]: P(tone | occupation)
    stereotyped_given_region: np.ndarray  # [region]: P(style = stereotyped | region)
    per_region: int | None
    test_fraction: float | None

    @property
    def tone(self) -> np.ndarray:
        """P(tone) over the whole distribution (a guided model's unconditional branch)."""
        return self.occupation @ self.tone_given_occupation

    @property
    def stereotyped(self) -> float:
        """P(style = stereotyped) over the whole distribution."""
        return float(self.region @ self.stereotyped_given_region)


def declared(name: str, world: WorldSpec | None = None) -> Declared:
    """The probabilities the distribution ``name`` declares."""
    world = world or load_world()
    dist = world.distribution(name)
    regions, occupations = list(world.regions), list(world.occupations)
    n_tones = len(world.tones)
    if dist.tone_by_occupation is not None:
        tone = np.array([dist.tone_by_occupation[o] for o in occupations], dtype=float)
    else:
        base = _weights(dist.tone, [str(i) for i in range(n_tones)])
        tone = np.tile(base, (len(occupations), 1))
    if isinstance(dist.stereotyped, dict):
        stereo = np.array([dist.stereotyped[r] for r in regions], dtype=float)
    else:
        stereo = np.full(len(regions), float(dist.stereotyped))
    return Declared(
        regions=regions,
        occupations=occupations,
        settings=list(world.settings),
        region=_weights(dist.region, regions),
        occupation=_weights(dist.occupation, occupations),
        setting=_weights(dist.setting, list(world.settings)),
        tone_given_occupation=tone,
        stereotyped_given_region=stereo,
        per_region=dist.per_region,
        test_fraction=dist.test_fraction,
    )


def default_size(name: str, world: WorldSpec | None = None) -> int:
    """Rows of ``name`` when no ``n`` is given: ``per_region`` x regions, else ``default_n``."""
    world = world or load_world()
    dist = world.distribution(name)
    if dist.per_region is not None:
        return dist.per_region * len(world.regions)
    assert dist.default_n is not None  # checked at load time
    return dist.default_n


def sample_scenes(name: str, n: int | None = None, seed: int = 0,
                  world: WorldSpec | None = None) -> list[Scene]:
    """``n`` scenes (default: the distribution's size) from distribution ``name``."""
    return _sample(name, n, seed, world or load_world()).scenes


def sample_rows(name: str, n: int | None = None, seed: int = 0,
                world: WorldSpec | None = None) -> list[dict[str, Any]]:
    """Dataset rows (``metadata.jsonl`` format) for ``n`` scenes of distribution ``name``.

    Each row carries the caption and what it names, a culture-free ``generic_text``, the ground
    truth and the render ``seed``; ``probe``-like distributions (with ``test_fraction``) add
    ``split``. Images are not rendered here (see :func:`equigen.world.export.export_distribution`).
    """
    world = world or load_world()
    dist = world.distribution(name)
    sample = _sample(name, n, seed, world)
    rows = []
    for i, (scene, row_seed) in enumerate(zip(sample.scenes, sample.seeds, strict=True)):
        text = caption(scene, row_seed, dist.captions, world)
        row: dict[str, Any] = {
            "file_name": f"images/{i:06d}.png",
            "text": text.text,
            "generic_text": generic_caption(scene, row_seed, world),
            "culture": scene.region,
            "category": world.settings[scene.setting].category,
            "tone": scene.tone,
            "region": scene.region,
            "occupation": scene.occupation,
            "setting": scene.setting,
            "style": scene.style,
            "named": text.named_list,
            "seed": row_seed,
        }
        if sample.test is not None:
            row["split"] = "test" if sample.test[i] else "train"
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Sample:
    scenes: list[Scene]
    seeds: list[int]
    test: np.ndarray | None


def _sample(name: str, n: int | None, seed: int, world: WorldSpec) -> _Sample:
    dist = world.distribution(name)
    decl = declared(name, world)
    n = default_size(name, world) if n is None else n
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # One stream per (seed, distribution): "web" and "probe" with the same seed are unrelated.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    region = _draw_regions(rng, dist, decl, n)
    occupation = rng.choice(len(decl.occupations), size=n, p=decl.occupation)
    tone = _draw_rows(rng, decl.tone_given_occupation[occupation])
    setting = rng.choice(len(decl.settings), size=n, p=decl.setting)
    stereotyped = rng.random(n) < decl.stereotyped_given_region[region]
    seeds = rng.integers(0, 2**31 - 1, size=n)
    test = None
    if dist.test_fraction is not None:
        test = np.zeros(n, dtype=bool)
        test[rng.permutation(n)[: round(n * dist.test_fraction)]] = True
    scenes = [
        Scene(tone=int(t), region=decl.regions[r], occupation=decl.occupations[o],
              setting=decl.settings[s], style=STYLES[int(st)])
        for t, r, o, s, st in zip(tone, region, occupation, setting, stereotyped, strict=True)
    ]
    return _Sample(scenes=scenes, seeds=[int(s) for s in seeds], test=test)


def _draw_regions(rng: np.random.Generator, dist: DistributionSpec, decl: Declared,
                  n: int) -> np.ndarray:
    """Independent draws, or (``per_region``) exact equal counts per region in random order."""
    k = len(decl.regions)
    if dist.per_region is None:
        return rng.choice(k, size=n, p=decl.region)
    counts = np.full(k, n // k)
    counts[: n % k] += 1
    return rng.permutation(np.repeat(np.arange(k), counts))


def _draw_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` (vectorised inverse-CDF sampling)."""
    if len(probs) == 0:
        return np.zeros(0, dtype=int)
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]
    drawn: np.ndarray = np.minimum((u >= cdf).sum(axis=1), probs.shape[1] - 1)
    return drawn


def _weights(weights: Weights | list[float], names: list[str]) -> np.ndarray:
    if weights == "uniform":
        return np.full(len(names), 1.0 / len(names))
    if isinstance(weights, list):
        w = np.asarray(weights, dtype=float)
    else:
        assert isinstance(weights, dict)
        w = np.array([weights.get(k, 0.0) for k in names], dtype=float)
    normalised: np.ndarray = w / w.sum()  # sums are checked at load time; this removes rounding
    return normalised
