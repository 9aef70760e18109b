"""What Fair Mapping trains on: attributes with their group words, templates x concepts.

A template has a ``{group}`` and a ``{concept}`` slot, e.g. ``"a photo of a {group} {concept}"``.
Leaving the group out gives the neutral prompt ("a photo of a doctor"); filling it gives one
variant per group ("a photo of a dark-skinned doctor"). ``a``/``an`` are fixed after filling.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from equigen.config import StrictModel
from equigen.methods.fairmap.losses import EmbeddingDistance


class GroupAttribute(StrictModel):
    # group name -> the words a prompt uses to name it, inserted at {group}
    groups: dict[str, str] = Field(min_length=2)
    # more words meaning a prompt already names this attribute ("skin", "woman", ...)
    keywords: list[str] = Field(default_factory=list)

    def words(self) -> list[str]:
        return list(self.groups.values()) + self.keywords


class FairMapConfig(StrictModel):
    model: str = "mini-world"
    attributes: dict[str, GroupAttribute] = Field(min_length=1)
    # pairs (or more) of attributes whose joint groups must also be balanced ("young woman")
    intersections: list[list[str]] = Field(default_factory=list)
    templates: list[str] = Field(min_length=1)
    concepts: list[str] = Field(min_length=1)
    heldout_concepts: list[str] = Field(default_factory=list)  # never trained on; for evaluation
    fair_weight: float = Field(1.0, ge=0)  # lambda: fairness vs fidelity
    # where distances are measured: "embedding" (token-averaged text embeddings, as in the
    # paper) or "denoiser" (the frozen UNet's noise predictions: distance as the generator sees it)
    distance: Literal["embedding", "denoiser"] = "denoiser"
    embedding_distance: EmbeddingDistance = "l2"
    timesteps: tuple[float, float] = (0.6, 1.0)  # denoiser distance: t range, fractions of T
    # denoiser distance, what is noised: "noise" (pure Gaussian x_t, right only at high t);
    # "generated" (latents the frozen model draws for every group variant, balanced over groups,
    # noised to t: on-distribution at every t); "group" (d_j on latents drawn for group j's own
    # prompt: d_j then estimates how badly the mapped prompt explains group j's images, the
    # diffusion bound on KL(p_j || p_mapped), so equal distances mean every group is covered
    # equally, which stays well-posed when the groups lie on a line, as skin tones do)
    noisy_latents: Literal["noise", "generated", "group"] = "noise"
    latent_pool: int = Field(4, ge=1)  # "generated" / "group": latents per (concept, group)
    latent_steps: int = Field(20, ge=1)  # ... and the sampler steps that draw them
    steps: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    out: Path = Path("runs/fairmap")
    device: Optional[str] = None

    @field_validator("templates")
    @classmethod
    def _slots(cls, templates: list[str]) -> list[str]:
        for t in templates:
            if "{group}" not in t or "{concept}" not in t:
                raise ValueError(f"template {t!r} needs both {{group}} and {{concept}}")
        return templates

    @model_validator(mode="after")
    def _check(self) -> "FairMapConfig":
        for combo in self.intersections:
            unknown = [a for a in combo if a not in self.attributes]
            if len(combo) < 2 or unknown:
                raise ValueError(f"intersection {combo} must name >= 2 of the attributes "
                                 f"{list(self.attributes)}")
        overlap = set(self.concepts) & set(self.heldout_concepts)
        if overlap:
            raise ValueError(f"concepts {sorted(overlap)} are both trained on and held out")
        lo, hi = self.timesteps
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"timesteps must be 0 <= lo < hi <= 1, got {self.timesteps}")
        return self

    def keyword_lists(self) -> dict[str, list[str]]:
        return {name: spec.words() for name, spec in self.attributes.items()}


@dataclass(frozen=True)
class PromptTriples:
    """Neutral prompts and, per attribute (or intersection), each one's K group variants."""
    neutral: list[str]
    variants: dict[str, list[list[str]]]  # attribute -> [prompt][group] text
    groups: dict[str, list[str]]  # attribute -> group names, in variant order
    concepts: list[str]  # the concept of each neutral prompt

    def reference_variants(self, name: str) -> list[list[str]]:
        """Per neutral prompt, the group variants of its concept under the first template: the
        prompts whose generations stand for each group of that concept."""
        first = {c: i for i, c in reversed(list(enumerate(self.concepts)))}
        return [self.variants[name][first[c]] for c in self.concepts]


def fix_articles(text: str) -> str:
    """Collapse spaces and make each ``a``/``an`` agree with the next word's first letter."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\b([Aa])n? (?=([A-Za-z]))",
                  lambda m: (m.group(1) + ("n " if m.group(2).lower() in "aeiou" else " ")), text)


def build_prompts(cfg: FairMapConfig, concepts: list[str] | None = None) -> PromptTriples:
    """Neutral prompts (templates x concepts) with their variants for every attribute."""
    concepts = cfg.concepts if concepts is None else concepts
    attribute_groups = {name: list(spec.groups.items()) for name, spec in cfg.attributes.items()}
    for combo in cfg.intersections:
        joint = itertools.product(*(cfg.attributes[a].groups.items() for a in combo))
        attribute_groups["x".join(combo)] = [
            (" & ".join(g for g, _ in parts), " ".join(w for _, w in parts)) for parts in joint]
    neutral: list[str] = []
    of_concept: list[str] = []
    variants: dict[str, list[list[str]]] = {name: [] for name in attribute_groups}
    for template, concept in itertools.product(cfg.templates, concepts):
        neutral.append(fix_articles(template.format(group="", concept=concept)))
        of_concept.append(concept)
        for name, groups in attribute_groups.items():
            variants[name].append([fix_articles(template.format(group=words, concept=concept))
                                   for _, words in groups])
    return PromptTriples(neutral, variants,
                         {name: [g for g, _ in groups] for name, groups in attribute_groups.items()},
                         of_concept)

