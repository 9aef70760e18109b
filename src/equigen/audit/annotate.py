"""Annotators by name, and reading attribute labels from them for a prompt set."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from equigen.audit.annotators import Annotator
from equigen.audit.prompts import AttributeSpec
from equigen.errors import EquigenError

ABSTAINED = -1


def load_annotator(spec: str) -> Annotator:
    """``oracle`` (the shipped mini-world oracle) or ``oracle:FOLDER``."""
    kind, _, path = spec.partition(":")
    if kind == "oracle":
        from equigen.world.oracle import OracleAnnotator

        return OracleAnnotator.load(Path(path) if path else None)
    raise EquigenError(f"annotator {spec!r}: unknown kind {kind!r} (available: oracle, oracle:FOLDER)")


def check_attributes(annotator: Annotator, attributes: dict[str, AttributeSpec], source: str) -> None:
    """Every measured attribute and group must be one the annotator reads."""
    for name, spec in attributes.items():
        if name not in annotator.groups:
            raise EquigenError(f"{source}: attribute {name!r} is not read by the annotator "
                               f"(it reads: {', '.join(annotator.groups)})")
        unknown = set(spec.groups) - set(annotator.groups[name])
        if unknown:
            raise EquigenError(f"{source}: {name} groups {sorted(unknown)} are not the annotator's "
                               f"({annotator.groups[name]})")


def annotate(annotator: Annotator, images: Sequence[Image.Image],
             attributes: dict[str, AttributeSpec], abstain_below: float | None = None,
             batch_size: int = 256) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{attribute: (labels [N] as indices into the prompt set's groups, or -1 when abstaining;
    probabilities [N, K] in the prompt set's group order)}."""
    chunks: dict[str, list[torch.Tensor]] = {a: [] for a in attributes}
    for start in range(0, len(images), batch_size):
        probs = annotator.predict_proba(list(images[start : start + batch_size]))
        for a in attributes:
            chunks[a].append(probs[a])
    out = {}
    for a, spec in attributes.items():
        full = torch.cat(chunks[a]).numpy()
        order = [annotator.groups[a].index(g) for g in spec.groups]
        probs = full[:, order]
        labels = probs.argmax(-1)
        if abstain_below is not None:
            labels = np.where(probs.max(-1) < abstain_below, ABSTAINED, labels)
        out[a] = (labels, probs)
    return out
