"""Evaluation prompts for the mini-world, written the way its ``web`` captions are.

Training captions come from the templates in ``world.yaml``; these helpers make deterministic
prompts from the same vocabulary: a *neutral* prompt names only the occupation ("a photo of a
doctor"), a *named* prompt names occupation, region and setting, and optionally the tone.
"""

from __future__ import annotations

from equigen.world.captions import with_article
from equigen.world.scene import WorldSpec, load_world


def neutral_prompt(occupation: str) -> str:
    return f"a photo of {with_article(occupation)}"


def named_prompt(occupation: str, region: str, setting: str, tone: int | None = None,
                 world: WorldSpec | None = None) -> str:
    """E.g. "a photo of a dark-skinned doctor from Avel at the market"."""
    world = world or load_world()
    noun = occupation if tone is None else f"{world.tones[tone].name}-skinned {occupation}"
    place = world.settings[setting].place[0]
    return f"a photo of {with_article(noun)} from {region} {place}"


def region_prompt(region: str, occupation: str | None = None) -> str:
    """A prompt about a region with nothing else named: "a photo of a person from Kethu"."""
    return f"a photo of {with_article(occupation or 'person')} from {region}"
