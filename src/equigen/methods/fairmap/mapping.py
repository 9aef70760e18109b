"""The trained artefact: a linear map on prompt embeddings plus the keyword detector that decides
which prompts it applies to. Saved as ``fairmap.safetensors`` + ``fairmap.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from equigen.errors import EquigenError
from equigen.utils.io import atomic_path, write_json_atomic
from equigen.utils.keywords import KeywordDetector

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

WEIGHTS = "fairmap.safetensors"
CONFIG = "fairmap.json"
FORMAT_VERSION = 1


class FairMap(nn.Module):
    """x -> x W^T + b on every token's embedding (width D), initialised to the identity."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.linear = nn.Linear(width, width)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(width))
            self.linear.bias.zero_()

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings)


def text_width(pipe: "DiffusionPipeline") -> int:
    """Width of the text encoder's per-token output (CLIP: hidden_size; MiniLM: hidden_size)."""
    config = pipe.text_encoder.config
    width = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if width is None:
        raise EquigenError(f"cannot read the text encoder's width from {type(config).__name__}")
    return int(width)


class FairMapping:
    """A trained Fair Mapping: the map, which prompts it skips, and how it was made.

    ``encode`` is a prompt encoder for :func:`equigen.models.generate.generate_images` (and any
    diffusers pipeline that takes ``prompt_embeds``): it encodes prompts with the pipeline's own
    text encoder and maps those that name no group of the debiased attributes.
    """

    def __init__(self, fairmap: FairMap, keywords: dict[str, list[str]],
                 info: dict[str, Any] | None = None):
        self.map = fairmap.eval().requires_grad_(False)
        self.keywords = keywords
        self.detector = KeywordDetector(w for words in keywords.values() for w in words)
        self.info = info or {}

    def applies_to(self, prompt: str) -> bool:
        return not self.detector(prompt)

    @torch.no_grad()
    def encode(self, pipe: "DiffusionPipeline", prompts: Sequence[str],
               negative_prompts: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, negative_prompt_embeds) for ``pipe(prompt_embeds=..., ...)``."""
        width = text_width(pipe)
        if width != self.map.width:
            raise EquigenError(f"this Fair Mapping was trained for a text encoder of width "
                               f"{self.map.width}, the pipeline's has width {width}")
        embeds, negative = pipe.encode_prompt(list(prompts), pipe.device, 1, True,
                                              negative_prompt=negative_prompts)
        mask = torch.tensor([self.applies_to(p) for p in prompts], device=embeds.device)
        if mask.any():
            self.map.to(device=embeds.device, dtype=embeds.dtype)
            embeds = embeds.clone()
            embeds[mask] = self.map(embeds[mask])
        return embeds, negative

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.map.state_dict().items()}
        with atomic_path(folder / WEIGHTS) as tmp:
            save_file(tensors, str(tmp))
        write_json_atomic(folder / CONFIG, {"format_version": FORMAT_VERSION, "width": self.map.width,
                                            "keywords": self.keywords, **self.info})

    @classmethod
    def load(cls, folder: str | Path) -> "FairMapping":
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (WEIGHTS, CONFIG):
            if not (folder / name).is_file():
                raise EquigenError(f"{folder / name}: not found (a Fair Mapping folder holds "
                                   f"{WEIGHTS} and {CONFIG}; make one with 'equigen fairmap train')")
        try:
            meta = json.loads((folder / CONFIG).read_text())
            width, keywords = int(meta.pop("width")), meta.pop("keywords")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EquigenError(f"{folder / CONFIG}: not a Fair Mapping config ({exc})") from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise EquigenError(f"{folder / CONFIG}: format_version {meta.get('format_version')!r}, "
                               f"this equigen reads {FORMAT_VERSION}")
        fairmap = FairMap(width)
        try:
            fairmap.load_state_dict(load_file(str(folder / WEIGHTS)))
        except RuntimeError as exc:
            raise EquigenError(f"{folder / WEIGHTS}: does not match width {width} ({exc})") from exc
        return cls(fairmap, keywords, meta)
