"""Prompt sets: what an audit asks a model to draw and which attributes it measures.

A prompt set is a YAML file::

    name: mini-world occupations
    attributes:                       # measured on every image; target: uniform or shares
      tone: {groups: [very light, light, brown, dark], target: uniform}
    templates:                        # expanded over every combination of slot values
      - text: "a photo of a {occupation}"
        slots: {occupation: [doctor, chef, farmer, teacher, builder]}
    prompts:                          # literal prompts; `expect` names attributes the prompt asks for
      - {text: "a photo of a dark-skinned doctor", expect: {tone: dark}}

``expect`` values may use slots (``expect: {tone: "{tone}"}``), so named-attribute accuracy can be
measured on templated prompts too.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

import numpy as np
from pydantic import Field, model_validator

from equigen.config import StrictModel, load_config
from equigen.errors import EquigenError


class AttributeSpec(StrictModel):
    groups: list[str] = Field(min_length=2)
    target: Union[Literal["uniform"], list[float], dict[str, float]] = "uniform"

    @model_validator(mode="after")
    def _check_target(self) -> "AttributeSpec":
        if isinstance(self.target, list) and len(self.target) != len(self.groups):
            raise ValueError(f"target has {len(self.target)} shares for {len(self.groups)} groups")
        if isinstance(self.target, dict) and set(self.target) - set(self.groups):
            raise ValueError(f"target names unknown groups {sorted(set(self.target) - set(self.groups))}")
        shares = self.target_vector()
        if not np.isclose(shares.sum(), 1.0, atol=1e-6) or (shares < 0).any():
            raise ValueError(f"target shares must be >= 0 and sum to 1, got {shares.round(4).tolist()}")
        return self

    def target_vector(self) -> np.ndarray:
        if self.target == "uniform":
            return np.full(len(self.groups), 1.0 / len(self.groups))
        if isinstance(self.target, dict):
            return np.array([self.target.get(g, 0.0) for g in self.groups], float)
        return np.asarray(self.target, float)


class PromptSpec(StrictModel):
    text: str = Field(min_length=1)
    id: str | None = None
    expect: dict[str, str] = Field(default_factory=dict)


class TemplateSpec(StrictModel):
    text: str = Field(min_length=1)
    slots: dict[str, list[str]] = Field(default_factory=dict)
    expect: dict[str, str] = Field(default_factory=dict)


class PromptSetSpec(StrictModel):
    name: str
    description: str = ""
    attributes: dict[str, AttributeSpec] = Field(min_length=1)
    templates: list[TemplateSpec] = Field(default_factory=list)
    prompts: list[PromptSpec] = Field(default_factory=list)


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    slots: dict[str, str] = field(default_factory=dict)
    expect: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptSet:
    name: str
    attributes: dict[str, AttributeSpec]
    prompts: list[Prompt]

    def target(self, attribute: str) -> np.ndarray:
        return self.attributes[attribute].target_vector()


def prompt_id(text: str) -> str:
    """A readable, stable id: a slug of the text plus a short hash (safe as a folder name)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48]
    return f"{slug}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def prompt_seed(base_seed: int, text: str, index: int) -> int:
    """The seed of image ``index`` of a prompt: the same prompt text gets the same seeds in every
    run and every prompt set, so before/after audits compare like with like."""
    digest = hashlib.sha256(f"{base_seed}|{text}|{index}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def load_prompt_set(path: str | Path) -> PromptSet:
    spec = load_config(PromptSetSpec, path)
    prompts: list[Prompt] = []
    for template in spec.templates:
        names = list(template.slots)
        for values in itertools.product(*(template.slots[n] for n in names)):
            slots = dict(zip(names, values))
            try:
                text = template.text.format(**slots)
                expect = {k: v.format(**slots) for k, v in template.expect.items()}
            except KeyError as exc:
                raise EquigenError(f"{path}: template {template.text!r} uses slot {exc} "
                                   f"that is not declared (slots: {', '.join(names) or 'none'})")
            prompts.append(Prompt(prompt_id(text), text, slots, expect))
    for literal in spec.prompts:
        prompts.append(Prompt(literal.id or prompt_id(literal.text), literal.text, {},
                              dict(literal.expect)))
    _check(path, spec, prompts)
    return PromptSet(spec.name, dict(spec.attributes), prompts)


def _check(path: str | Path, spec: PromptSetSpec, prompts: list[Prompt]) -> None:
    if not prompts:
        raise EquigenError(f"{path}: no prompts (give `templates` or `prompts`)")
    seen: dict[str, str] = {}
    for p in prompts:
        if p.id in seen:
            raise EquigenError(f"{path}: prompt {p.text!r} appears twice (id {p.id})")
        seen[p.id] = p.text
        for attribute, group in p.expect.items():
            if attribute not in spec.attributes:
                raise EquigenError(f"{path}: prompt {p.text!r} expects unknown attribute "
                                   f"{attribute!r} (attributes: {', '.join(spec.attributes)})")
            if group not in spec.attributes[attribute].groups:
                raise EquigenError(f"{path}: prompt {p.text!r} expects {attribute}={group!r}, "
                                   f"not one of {spec.attributes[attribute].groups}")
