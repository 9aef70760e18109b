"""Evaluation prompts for the mini-world, written the way its ``web`` captions are.

Training captions come from the templates in ``world.yaml``; these helpers make deterministic
prompts from the same vocabulary: a *neutral* prompt names only the occupation ("a photo of a
doctor"), a *named* prompt names occupation, region and setting, and optionally the tone.
``corpus_neutral_prompts`` takes neutral prompts from the corpus's own captions instead.
"""

from __future__ import annotations

from equigen.errors import EquigenError
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


def corpus_neutral_prompts(occupation: str, n: int, seed: int = 0, distribution: str = "web",
                           world: WorldSpec | None = None) -> list[str]:
    """``n`` captions that ``distribution`` itself writes for scenes of ``occupation`` and that
    name the occupation but not the tone, e.g. "a portrait of an Avelian teacher in a street".

    These are the neutral prompts a model trained on that corpus has seen, in the corpus's own
    mix of wordings, regions and settings (held-out combinations left out, as in training), so
    the tone it draws for them is what it learnt p(tone | occupation) to be. "a photo of a
    teacher" alone is rare in the corpus (most captions also name a region or a place).
    """
    from equigen.world.distributions import sample_rows

    world = world or load_world()
    if occupation not in world.occupations:
        raise EquigenError(f"unknown occupation {occupation!r} (known: {', '.join(world.occupations)})")
    rows = sample_rows(distribution, 12 * n * len(world.occupations), seed=seed, world=world)
    prompts = [r["text"] for r in rows
               if r["occupation"] == occupation and "occupation" in r["named"]
               and "tone" not in r["named"]
               and not world.is_heldout(r["occupation"], r["region"], r["setting"])]
    if len(prompts) < n:
        raise EquigenError(f"{distribution!r} names {occupation!r} without a tone in only "
                           f"{len(prompts)} of {len(rows)} captions; fewer than the {n} asked for")
    return prompts[:n]
