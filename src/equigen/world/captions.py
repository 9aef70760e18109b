"""Captions for mini-world scenes, with a record of which attributes each caption names.

A caption names each attribute with the probability its rules declare (``world.yaml``,
``captions``); what it names is returned beside the text so that training data, audits and tests
know exactly which attributes the text conditions on. ``generic_caption`` is the plain,
culture-free description SCoFT's memorization penalty needs ("a photo of a person at the market").
Both are deterministic given the seed, and use a random stream separate from the renderer's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from equigen.errors import EquigenError
from equigen.world.scene import (
    ATTRIBUTES,
    CaptionRules,
    RegionSpec,
    Scene,
    SettingSpec,
    WorldSpec,
    check_scene,
    load_world,
)

_CAPTION_STREAM = 0x63617074  # "capt": keeps caption draws independent of the render seed's stream
_GENERIC_STREAM = 0x67656E72  # "genr"


@dataclass(frozen=True)
class Caption:
    """A caption and the attributes it names, e.g. ``{"occupation": "doctor", "tone": 3}``."""

    text: str
    named: dict[str, int | str] = field(default_factory=dict)

    @property
    def named_list(self) -> list[str]:
        """The named attribute names in the canonical order (tone, region, occupation, ...)."""
        return [a for a in ATTRIBUTES if a in self.named]


def caption(scene: Scene, seed: int, rules: str | CaptionRules = "plain",
            world: WorldSpec | None = None, always_name: tuple[str, ...] = ()) -> Caption:
    """A caption for ``scene`` under the named caption rules (``plain`` or ``insider``).

    ``always_name`` forces attributes to be named (e.g. ``("tone",)``); whether each other
    attribute is named stays the seed's choice (the wording may change), as a recaptioner would.
    """
    world = world or load_world()
    check_scene(scene, world)
    if isinstance(rules, str):
        if rules not in world.captions:
            known = ", ".join(world.captions)
            raise EquigenError(f"unknown caption rules {rules!r} (known: {known})")
        rules = world.captions[rules]
    rng = np.random.default_rng([seed, _CAPTION_STREAM])
    probs = rules.name_probability
    unknown = set(always_name) - {"occupation", "tone", "region", "setting"}
    if unknown:
        raise EquigenError(f"always_name: unknown attribute(s) {sorted(unknown)} "
                           "(valid: occupation, tone, region, setting)")
    name = {attr: bool(rng.random() < getattr(probs, attr)) or attr in always_name
            for attr in ("occupation", "tone", "region", "setting")}
    region_on_place = name["region"] and name["setting"] and rng.random() < rules.region_on_place
    scene_only = (name["setting"] and not name["occupation"] and not name["tone"]
                  and rng.random() < rules.scene_only)
    words = _region_words(scene.region, world.regions[scene.region])
    setting = world.settings[scene.setting]
    if scene_only:
        text = _scene_caption(rng, rules, setting, words, name["region"])
    else:
        text = _person_caption(rng, scene, rules, world, setting, words, name, region_on_place)
    named: dict[str, int | str] = {
        attr: getattr(scene, attr) for attr in ("tone", "region", "occupation", "setting")
        if name[attr]
    }
    return Caption(text=text, named=named)


def generic_caption(scene: Scene, seed: int, world: WorldSpec | None = None) -> str:
    """A plain description of the image that names no tone, region or cultural item."""
    world = world or load_world()
    rng = np.random.default_rng([seed, _GENERIC_STREAM])
    template = _choose(rng, world.generic_templates)
    place = _choose(rng, world.settings[scene.setting].place)
    occupation = world.occupations[scene.occupation]
    text = template.format(place=place, prop_noun=occupation.prop_noun, noun=scene.occupation)
    return _tidy(text)


# ---------------------------------------------------------------------------------- internals


def _scene_caption(rng: np.random.Generator, rules: CaptionRules, setting: SettingSpec,
                   words: dict[str, str], name_region: bool) -> str:
    phrases = setting.scene_in_region if name_region else setting.scene
    scene = _choose(rng, phrases).format(**words)
    return _tidy(_choose(rng, rules.scene_templates).format(scene=scene))


def _person_caption(rng: np.random.Generator, scene: Scene, rules: CaptionRules, world: WorldSpec,
                    setting: SettingSpec, words: dict[str, str], name: dict[str, bool],
                    region_on_place: bool) -> str:
    place = ""
    if name["setting"]:
        if name["region"] and rules.phrases == "insider":  # insiders name their own places
            place, region_on_place = _choose(rng, setting.insider).format(**words), True
        elif region_on_place:
            place = _choose(rng, setting.place_in_region).format(**words)
        else:
            place = _choose(rng, setting.place)
    region_on_person = name["region"] and not region_on_place
    person = _person_phrase(rng, scene, world, words, name, region_on_person)
    templates = rules.templates if name["region"] else [
        t for t in rules.templates if "garment}" not in t] or ["{person} {place}"]
    template = _choose(rng, templates)
    return _tidy(template.format(person=person, place=place, garment=words["garment"],
                                 a_garment=words["a_garment"]))


def _person_phrase(rng: np.random.Generator, scene: Scene, world: WorldSpec,
                   words: dict[str, str], name: dict[str, bool], region_on_person: bool) -> str:
    """E.g. "a dark-skinned doctor", "an Avelian chef with light skin", "a person from Kethu"."""
    before: list[str] = []
    after: list[str] = []
    if name["tone"]:
        tone = world.tones[scene.tone].name
        if rng.random() < 0.5:
            before.append(f"{tone}-skinned")
        else:
            after.append(f"with {tone} skin")
    if region_on_person:
        if rng.random() < 0.5:
            before.append(words["demonym"])
        else:
            after.append(f"from {words['region']}")
    noun = scene.occupation if name["occupation"] else "person"
    return " ".join([with_article(" ".join([*before, noun])), *after])


def _region_words(name: str, region: RegionSpec) -> dict[str, str]:
    return {
        "region": name,
        "a_region": with_article(name),
        "demonym": region.demonym,
        "a_demonym": with_article(region.demonym),
        "garment": region.garment,
        "a_garment": with_article(region.garment),
        "market_name": region.market_name,
        "quarter": region.quarter,
    }


def with_article(phrase: str) -> str:
    """``"Avel street"`` -> ``"an Avel street"`` (by the first letter; fine for this vocabulary)."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _choose(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _tidy(text: str) -> str:
    return re.sub(r"\s+,", ",", re.sub(r"\s+", " ", text)).strip(" ,")
