"""A mini-world scene and the typed spec of the world (``world.yaml``) it is drawn from.

The whole world (attribute values, their looks, caption words, every distribution's skew) lives in
one YAML file validated here, so a typo or a missing key fails at load time with a message that
names the key, not later inside the renderer.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from equigen.config import StrictModel, load_config
from equigen.errors import EquigenError

WORLD_YAML = Path(__file__).with_name("world.yaml")
STYLES = ("authentic", "stereotyped")
ATTRIBUTES = ("tone", "region", "occupation", "setting", "style")

Channel = Annotated[int, Field(ge=0, le=255)]
RGB = tuple[Channel, Channel, Channel]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]
Phrases = Annotated[list[str], Field(min_length=1)]
Weights = Literal["uniform"] | dict[str, Prob]


@dataclass(frozen=True)
class Scene:
    """The ground truth of one image. ``tone`` indexes ``WorldSpec.tones``; style is
    ``"authentic"`` or ``"stereotyped"``."""

    tone: int
    region: str
    occupation: str
    setting: str
    style: str


# ----------------------------------------------------------------------------------- the spec


class ToneSpec(StrictModel):
    name: str
    rgb: RGB


class DressSpec(StrictModel):
    pattern: Literal["stripes", "checks", "zigzag", "dots", "diamonds"]
    colors: tuple[RGB, RGB]


class ArchitectureSpec(StrictModel):
    roof: Literal["gable", "arch", "dome", "stepped", "flat"]
    walls: Annotated[list[RGB], Field(min_length=1)]
    roof_color: RGB


class RegionSpec(StrictModel):
    demonym: str
    dress: DressSpec
    architecture: ArchitectureSpec
    awning: tuple[RGB, RGB]
    home_wall: RGB
    garment: str
    market_name: str
    quarter: str

    def words(self, name: str) -> list[str]:
        """Every word that gives the region away (for checks that a caption leaves it out)."""
        return [name, self.demonym, self.garment, self.market_name, self.quarter]


class OccupationSpec(StrictModel):
    prop: Literal["medkit", "pan", "pitchfork", "board", "hammer"]
    hat: Literal["none", "toque", "straw", "hardhat"]
    accessory: Literal["none", "stethoscope", "glasses", "bricks"]
    prop_noun: str


class SettingSpec(StrictModel):
    kind: Literal["street", "market", "home"]
    category: str
    place: Phrases
    place_in_region: Phrases
    scene: Phrases
    scene_in_region: Phrases
    insider: Phrases


class StyleSpec(StrictModel):
    sky: tuple[RGB, RGB]
    fade: Prob
    dress_fade: Prob
    ground: Literal["paved", "dirt"]
    clutter: tuple[int, int]
    stains: tuple[int, int]
    broken: Prob


class StylesSpec(StrictModel):
    authentic: StyleSpec
    stereotyped: StyleSpec


class NameProbability(StrictModel):
    occupation: Prob
    tone: Prob
    region: Prob
    setting: Prob


class CaptionRules(StrictModel):
    name_probability: NameProbability
    region_on_place: Prob
    scene_only: Prob
    phrases: Literal["plain", "insider"]
    templates: Phrases
    scene_templates: Phrases


class DistributionSpec(StrictModel):
    description: str = ""
    default_n: Annotated[int, Field(gt=0)] | None = None
    per_region: Annotated[int, Field(gt=0)] | None = None
    test_fraction: Prob | None = None
    captions: str
    region: Weights
    occupation: Weights
    setting: Weights
    tone: Literal["uniform"] | list[Prob] = "uniform"
    tone_by_occupation: dict[str, list[Prob]] | None = None
    stereotyped: Prob | dict[str, Prob]


class WorldSpec(StrictModel):
    tones: Annotated[list[ToneSpec], Field(min_length=2)]
    tone_jitter: Prob
    hair: Annotated[list[RGB], Field(min_length=1)]
    regions: dict[str, RegionSpec]
    occupations: dict[str, OccupationSpec]
    settings: dict[str, SettingSpec]
    styles: StylesSpec
    dust: RGB
    captions: dict[str, CaptionRules]
    generic_templates: Phrases
    distributions: dict[str, DistributionSpec]
    # (occupation, region, setting) combinations kept out of the base model's training corpus,
    # so that evaluation can ask for scenes the model has never seen together.
    heldout_combinations: list[tuple[str, str, str]] = Field(default_factory=list)

    def is_heldout(self, occupation: str, region: str, setting: str) -> bool:
        return (occupation, region, setting) in self.heldout_combinations

    @property
    def tone_names(self) -> list[str]:
        return [t.name for t in self.tones]

    def style(self, name: str) -> StyleSpec:
        if name not in STYLES:
            raise EquigenError(f"unknown style {name!r} (known: {', '.join(STYLES)})")
        spec: StyleSpec = getattr(self.styles, name)
        return spec

    def distribution(self, name: str) -> DistributionSpec:
        if name not in self.distributions:
            raise EquigenError(
                f"unknown distribution {name!r} (known: {', '.join(self.distributions)})"
            )
        return self.distributions[name]


# ------------------------------------------------------------------------------------ loading


def load_world(path: str | Path | None = None) -> WorldSpec:
    """The world spec from ``path`` (default: the packaged ``world.yaml``), loaded once per path."""
    return _load_world(str(Path(path) if path is not None else WORLD_YAML))


@lru_cache(maxsize=8)
def _load_world(path: str) -> WorldSpec:
    world = load_config(WorldSpec, path)
    _check_references(world, path)
    return world


def check_scene(scene: Scene, world: WorldSpec) -> None:
    """Raise a clear error when ``scene`` names a value the world does not have."""
    if not 0 <= scene.tone < len(world.tones):
        raise EquigenError(f"scene tone {scene.tone} out of range 0..{len(world.tones) - 1}")
    for attr, known in (
        ("region", world.regions),
        ("occupation", world.occupations),
        ("setting", world.settings),
        ("style", STYLES),
    ):
        value = getattr(scene, attr)
        if value not in known:
            raise EquigenError(f"scene {attr} {value!r} unknown (known: {', '.join(known)})")


def _check_references(world: WorldSpec, source: str) -> None:
    """Cross-key checks pydantic cannot express: names that refer to other sections, sums."""
    problems: list[str] = []
    for name, dist in world.distributions.items():
        problems += _check_distribution(world, f"distributions.{name}", dist)
    for name, rules in world.captions.items():
        key = f"captions.{name}"
        problems += _check_fields(f"{key}.templates", rules.templates,
                                  {"person", "place", "garment", "a_garment"})
        problems += _check_fields(f"{key}.scene_templates", rules.scene_templates, {"scene"})
    problems += _check_fields("generic_templates", world.generic_templates,
                              {"place", "prop_noun", "noun"})
    for name, setting in world.settings.items():
        problems += _check_setting_phrases(f"settings.{name}", setting)
    for i, (occupation, region, setting_name) in enumerate(world.heldout_combinations):
        for value, known in ((occupation, world.occupations), (region, world.regions),
                             (setting_name, world.settings)):
            if value not in known:
                problems.append(f"heldout_combinations[{i}]: unknown {value!r} "
                                f"(known: {', '.join(known)})")
    if problems:
        raise EquigenError(f"invalid world {source}:\n  " + "\n  ".join(problems))


def _check_distribution(world: WorldSpec, key: str, dist: DistributionSpec) -> list[str]:
    problems = []
    if dist.captions not in world.captions:
        problems.append(f"{key}.captions: unknown caption rules {dist.captions!r} "
                        f"(known: {', '.join(world.captions)})")
    if dist.default_n is None and dist.per_region is None:
        problems.append(f"{key}: needs default_n or per_region")
    for attr, known in (("region", world.regions), ("occupation", world.occupations),
                        ("setting", world.settings)):
        problems += _check_weights(f"{key}.{attr}", getattr(dist, attr), list(known))
    n_tones = len(world.tones)
    if dist.tone != "uniform":
        problems += _check_vector(f"{key}.tone", dist.tone, n_tones)
    if dist.tone_by_occupation is not None:
        problems += _check_keys(f"{key}.tone_by_occupation", dist.tone_by_occupation,
                                list(world.occupations))
        for occ, vector in dist.tone_by_occupation.items():
            problems += _check_vector(f"{key}.tone_by_occupation.{occ}", vector, n_tones)
    if isinstance(dist.stereotyped, dict):
        problems += _check_keys(f"{key}.stereotyped", dist.stereotyped, list(world.regions))
    return problems


def _check_weights(key: str, weights: Weights, known: list[str]) -> list[str]:
    """A mapping may leave values out (probability 0) but must not invent any."""
    if weights == "uniform":
        return []
    assert isinstance(weights, dict)
    unknown = [k for k in weights if k not in known]
    if unknown:
        return [f"{key}: unknown {', '.join(map(repr, unknown))} (known: {', '.join(known)})"]
    return _check_sum(key, list(weights.values()))


def _check_keys(key: str, mapping: Mapping[str, object], known: list[str]) -> list[str]:
    unknown = [k for k in mapping if k not in known]
    missing = [k for k in known if k not in mapping]
    problems = []
    if unknown:
        problems.append(
            f"{key}: unknown {', '.join(map(repr, unknown))} (known: {', '.join(known)})"
        )
    if missing:
        problems.append(f"{key}: missing {', '.join(map(repr, missing))}")
    return problems


def _check_vector(key: str, vector: list[float], length: int) -> list[str]:
    if len(vector) != length:
        return [f"{key}: expected {length} probabilities (one per tone), got {len(vector)}"]
    return _check_sum(key, vector)


def _check_sum(key: str, values: list[float]) -> list[str]:
    total = sum(values)
    return [] if abs(total - 1.0) < 1e-6 else [f"{key}: probabilities sum to {total:g}, not 1"]


def _check_fields(key: str, templates: list[str], allowed: set[str]) -> list[str]:
    problems = []
    for i, template in enumerate(templates):
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            problems.append(f"{key}[{i}]: malformed template {template!r} ({exc})")
            continue
        bad = fields - allowed
        if bad:
            problems.append(f"{key}[{i}]: unknown placeholder(s) {sorted(bad)} in {template!r} "
                            f"(allowed: {sorted(allowed)})")
    return problems


_REGION_FIELDS = {"region", "a_region", "demonym", "a_demonym", "market_name", "quarter"}


def _check_setting_phrases(key: str, setting: SettingSpec) -> list[str]:
    """Regional phrases must name the region and plain ones must not, so ``named`` stays true."""
    problems: list[str] = []
    for field in ("place", "scene"):
        problems += _check_fields(f"{key}.{field}", getattr(setting, field), set())
    for field in ("place_in_region", "scene_in_region", "insider"):
        phrases = getattr(setting, field)
        problems += _check_fields(f"{key}.{field}", phrases, _REGION_FIELDS)
        for i, phrase in enumerate(phrases):
            if "{" not in phrase:
                problems.append(f"{key}.{field}[{i}]: {phrase!r} must name the region "
                                f"(use one of {sorted(_REGION_FIELDS)})")
    return problems
