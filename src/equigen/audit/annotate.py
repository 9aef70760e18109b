"""Annotators by name, and reading attribute labels from them for a prompt set."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from equigen.audit.annotators import Annotator
from equigen.audit.prompts import AttributeSpec
from equigen.audit.results import ABSTAINED
from equigen.errors import EquigenError



KINDS = "oracle, oracle:FOLDER, clip:CONFIG.yaml, classifier:FOLDER"


def load_annotator(spec: str, allow_download: bool = False) -> Annotator:
    """``oracle`` (the shipped mini-world oracle) or ``oracle:FOLDER``; ``clip:CONFIG.yaml``
    (zero-shot CLIP, :mod:`equigen.audit.clip_annotator`); ``classifier:FOLDER`` (a timm classifier,
    :mod:`equigen.audit.classifier_annotator`). ``allow_download`` lets CLIP reach the hub."""
    kind, _, path = spec.partition(":")
    if kind == "oracle":
        from equigen.world.oracle import OracleAnnotator

        return OracleAnnotator.load(Path(path) if path else None)
    if kind in ("clip", "classifier") and not path:
        what = "CONFIG.yaml" if kind == "clip" else "FOLDER"
        raise EquigenError(f"annotator {spec!r}: {kind} needs a path, e.g. {kind}:{what}")
    if kind == "clip":
        from equigen.audit.clip_annotator import CLIPAnnotator

        return CLIPAnnotator.load(path, allow_download=allow_download)
    if kind == "classifier":
        from equigen.audit.classifier_annotator import ClassifierAnnotator

        return ClassifierAnnotator.load(path)
    raise EquigenError(f"annotator {spec!r}: unknown kind {kind!r} (available: {KINDS})")


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
             attributes: dict[str, AttributeSpec],
             abstain_below: float | dict[str, float] | None = None,
             batch_size: int = 256) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{attribute: (labels [N] as indices into the prompt set's groups, or -1 when abstaining;
    probabilities [N, K] in the prompt set's group order)}.

    ``abstain_below``: one threshold, or one per attribute ({attribute: threshold}; attributes
    not named never abstain). It defaults to the annotator's own ``abstain_below`` (CLIP and
    classifier annotators may declare one); pass 0 to never abstain. The threshold applies to the
    probabilities in the prompt set's groups (a subset of the annotator's is not renormalised)."""
    if abstain_below is None:
        abstain_below = getattr(annotator, "abstain_below", None)
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
        threshold = abstain_below.get(a) if isinstance(abstain_below, dict) else abstain_below
        if threshold is not None:
            labels = np.where(probs.max(-1) < threshold, ABSTAINED, labels)
        out[a] = (labels, probs)
    return out
