"""From per-image labels to ``results.json``: per-prompt and overall figures with intervals."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from equigen.audit.metrics import (
    METRICS,
    bootstrap_interval,
    distribution,
    joint_labels,
    joint_target,
    mean_over_prompts,
    metric_interval,
    sampling_floor,
)
from equigen.audit.prompts import PromptSet

FAIRNESS_METRICS = ("fd", "kl", "mad", "entropy")
ABSTAINED = -1  # the label of an image the annotator declined to label
SCHEMA_VERSION = 1


def fairness_metrics(target: np.ndarray) -> tuple[str, ...]:
    """KL(p||u) is infinite whenever the target gives a group no mass; skip it then."""
    return FAIRNESS_METRICS if (np.asarray(target) > 0).all() else ("fd", "mad", "entropy")


def _rounded(values: tuple[float, ...] | list[float]) -> list[float]:
    return [round(float(v), 5) for v in values]


def compute_results(prompt_set: PromptSet, labels: dict[str, dict[str, np.ndarray]],
                    n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``labels[prompt_id][attribute]`` -> the results document.

    An attribute's fairness figures use only prompts that do not name it (``expect``); prompts
    that name it give its named-attribute accuracy instead.
    """
    boot = {"n_boot": n_boot, "seed": seed}
    per_prompt = []
    for prompt in prompt_set.prompts:
        entry: dict[str, Any] = {"id": prompt.id, "text": prompt.text, "slots": prompt.slots,
                                 "attributes": {}, "expect": {}}
        for name, spec in prompt_set.attributes.items():
            all_labels = labels[prompt.id][name]
            kept = all_labels[all_labels != ABSTAINED]
            k = len(spec.groups)
            block: dict[str, Any] = {
                "n": int(len(kept)),
                "abstained": round(float(np.mean(all_labels == ABSTAINED)), 5),
                "distribution": _rounded(distribution(kept, k)),
                "target": _rounded(prompt_set.target(name)),
            }
            if name in prompt.expect:
                wanted = spec.groups.index(prompt.expect[name])
                hits = (kept == wanted).astype(float)
                entry["expect"][name] = {"group": prompt.expect[name],
                                         "accuracy": _rounded(bootstrap_interval(hits, np.mean, **boot))}
            elif len(kept):
                target = prompt_set.target(name)
                for metric in fairness_metrics(target):
                    block[metric] = _rounded(metric_interval(kept, k, METRICS[metric], target,
                                                             **boot))
                block["floor"] = {m: round(sampling_floor(METRICS[m], target, len(kept)), 5)
                                  for m in fairness_metrics(target) if m != "entropy"}
            entry["attributes"][name] = block
        per_prompt.append(entry)
    return {
        "schema_version": SCHEMA_VERSION,
        "prompt_set": prompt_set.name,
        "attributes": {name: {"groups": spec.groups, "target": _rounded(prompt_set.target(name))}
                       for name, spec in prompt_set.attributes.items()},
        "prompts": per_prompt,
        "summary": _summary(prompt_set, labels, boot),
    }


def _summary(prompt_set: PromptSet, labels: dict[str, dict[str, np.ndarray]],
             boot: dict[str, int]) -> dict[str, Any]:
    summary: dict[str, Any] = {"fairness": {}, "intersectional": {}, "alignment": {}}
    for name, spec in prompt_set.attributes.items():
        neutral = [labels[p.id][name] for p in prompt_set.prompts if name not in p.expect]
        neutral = [l[l != ABSTAINED] for l in neutral]
        neutral = [l for l in neutral if len(l)]
        if neutral:
            summary["fairness"][name] = {
                "prompts": len(neutral),
                **{m: _rounded(mean_over_prompts(neutral, len(spec.groups), METRICS[m],
                                                 prompt_set.target(name), **boot))
                   for m in fairness_metrics(prompt_set.target(name))},
            }
        # accuracy among the images the annotator labelled, as per prompt (abstentions apart)
        named = [(kept == spec.groups.index(p.expect[name])).astype(float)
                 for p in prompt_set.prompts if name in p.expect
                 for kept in [labels[p.id][name][labels[p.id][name] != ABSTAINED]]]
        if named:
            summary["alignment"][name] = _rounded(bootstrap_interval(np.concatenate(named), np.mean, **boot))
    names = list(prompt_set.attributes)
    for a, b in itertools.combinations(names, 2):
        ka, kb = len(prompt_set.attributes[a].groups), len(prompt_set.attributes[b].groups)
        joint = []
        for p in prompt_set.prompts:
            if a in p.expect or b in p.expect:
                continue
            la, lb = labels[p.id][a], labels[p.id][b]
            keep = (la != ABSTAINED) & (lb != ABSTAINED)
            if keep.any():
                joint.append(joint_labels(la[keep], lb[keep], kb))
        if joint:
            target = joint_target(prompt_set.target(a), prompt_set.target(b))
            summary["intersectional"][f"{a} x {b}"] = {
                m: _rounded(mean_over_prompts(joint, ka * kb, METRICS[m], target, **boot))
                for m in fairness_metrics(target)
            }
    return summary
