"""The annotator interface: a batch of images in, a probability distribution per attribute out.

Every way of reading attributes from pixels (the mini-world oracle, zero-shot CLIP, a user's own
classifier) implements :class:`Annotator`, so the audit and the metrics never care which one.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from PIL import Image


@runtime_checkable
class Annotator(Protocol):
    """Reads attributes from images. ``groups[attr]`` names the classes, in probability order."""

    groups: dict[str, list[str]]

    def predict_proba(self, images: Sequence[Image.Image] | torch.Tensor) -> dict[str, torch.Tensor]:
        """{attribute: [N, len(groups[attribute])] probabilities (rows sum to 1)}."""
        ...


def images_to_tensor(images: Sequence[Image.Image] | torch.Tensor, size: int | None = None) -> torch.Tensor:
    """PIL images (any mode) or a float tensor in [0, 1] -> float tensor [N, 3, H, W] in [0, 1]."""
    if isinstance(images, torch.Tensor):
        return images.float()
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(image))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255.0)


def check_thresholds(abstain_below: object, attributes: dict) -> None:
    """A per-attribute ``abstain_below`` may only name declared attributes (config validators)."""
    if isinstance(abstain_below, dict):
        unknown = sorted(set(abstain_below) - set(attributes))
        if unknown:
            raise ValueError(f"abstain_below names attributes that are not declared: {unknown} "
                             f"(attributes: {', '.join(attributes)})")
