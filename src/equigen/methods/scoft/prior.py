"""Prior preservation (DreamBooth, Ruiz et al. 2023), an option on top of SCoFT's losses.

A LoRA fitted to two cultures also changes how the model draws everything else (the other regions,
prompts that name no culture). Prior preservation keeps that: before training, the *base* model
draws ``images_per_caption`` images for each caption of a list of prompts it should not change;
every step adds ``weights.prior x`` the denoising loss on those images with their captions, so the
LoRA is penalised for moving the model's own outputs for them:

    L_prior = || eps_theta(x_t^prior, c_prior, t) - eps ||^2

The images are drawn once and kept as latents in ``out/prior-latents.safetensors`` (with what made
them), so a resumed run reuses them. The captions should not be the ones the evaluation uses.

They are drawn without guidance (w = 1) by default: then they are samples of the model's own
conditional p(x | c), the distribution the LoRA should keep, rather than of the guided tilt
p(x | c)^w p(x)^(1-w). Either way a finite set of drawings carries the sampler's artefacts (blur
at w = 1, exaggeration at w = 4), and fitting them moves the model too; on the mini-world
neither setting held the other regions in place (README).

``target: base`` (not in DreamBooth) regresses instead onto the frozen base model's own
prediction on the same noisy drawing, the LoRA switched off:

    L_prior = || eps_theta(x_t^prior, c_prior, t) - eps_base(x_t^prior, c_prior, t) ||^2

whose minimum is the base model itself whatever the drawings look like (one more UNet call per
step, without gradient).

``unconditional`` (a share, default 0) trains that share of the prior rows with the empty caption
instead of their own: every guided generation also calls the model without its prompt, so a LoRA
that moves the unconditional prediction moves every prompt's output by (1 - w) times that change,
however well the conditional predictions are held.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from equigen.config import StrictModel
from equigen.utils.console import info

PRIOR_LATENTS = "prior-latents.safetensors"


class PriorPreservation(StrictModel):
    captions: Path  # captions file (.txt / .jsonl / .csv, as for `equigen synth`)
    images_per_caption: int = Field(4, ge=1)
    guidance_scale: float = Field(1.0, ge=1.0)  # 1: the model's own distribution (module docstring)
    steps: int = Field(25, ge=1)  # sampling steps of the base model's drawings
    batch_size: int = Field(16, ge=1)
    target: Literal["noise", "base"] = "noise"  # DreamBooth's, or the base model's prediction
    unconditional: float = Field(0.0, ge=0.0, le=1.0)  # share of rows with the empty caption


class PriorSet:
    """The base model's latents for the prior captions, and the captions' embeddings."""

    def __init__(self, latents: torch.Tensor, caption_of: list[int], embeds: torch.Tensor,
                 empty: torch.Tensor | None = None, unconditional: float = 0.0):
        self.latents, self.caption_of, self.embeds = latents, caption_of, embeds
        self.empty, self.unconditional = empty, unconditional  # the empty caption's (1, L, D)
        if unconditional > 0 and empty is None:
            raise ValueError("unconditional > 0 needs the empty caption's embedding")

    def __len__(self) -> int:
        return len(self.latents)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents, caption embeddings) of ``batch`` prior images drawn uniformly; a share
        ``unconditional`` of them (drawn at random) with the empty caption instead."""
        rows = torch.randint(len(self), (batch,), generator=generator)
        embeds = self.embeds[[self.caption_of[i] for i in rows.tolist()]]
        if self.unconditional > 0:
            empty = torch.rand(batch, generator=generator) < self.unconditional
            embeds = torch.where(empty[:, None, None], self.empty.to(embeds.dtype), embeds)
        return self.latents[rows], embeds


def build_prior_set(spec: PriorPreservation, pipe, out: Path, seed: int,
                    device: torch.device) -> PriorSet:
    """Draw (or reload) the base model's prior images; call before the LoRA is added."""
    from safetensors.torch import load_file, save_file

    from equigen.data.synth import load_captions
    from equigen.models.generate import image_seed
    from equigen.utils.io import atomic_path

    texts = [c.text for c in load_captions(spec.captions)]
    made_by = {"captions_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
               "images_per_caption": spec.images_per_caption, "guidance_scale": spec.guidance_scale,
               "steps": spec.steps, "seed": seed}
    path = Path(out) / PRIOR_LATENTS
    latents = None
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            if json.loads(handle.metadata().get("made_by", "{}")) == made_by:
                latents = load_file(str(path))["latents"]
    if latents is None:
        latents = _draw(pipe, texts, spec, seed, image_seed, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"latents": latents.contiguous()}, str(tmp),
                      metadata={"made_by": json.dumps(made_by)})
    caption_of = [i for i in range(len(texts)) for _ in range(spec.images_per_caption)]
    with torch.no_grad():
        embeds = torch.cat([pipe.encode_prompt(texts[s : s + 64], device, 1, False)[0].float()
                            for s in range(0, len(texts), 64)])
        empty = pipe.encode_prompt([""], device, 1, False)[0].float()
    return PriorSet(latents.float(), caption_of, embeds, empty, spec.unconditional)


@torch.no_grad()
def _draw(pipe, texts: list[str], spec: PriorPreservation, seed: int, image_seed,
          device: torch.device) -> torch.Tensor:
    jobs = [(c, j) for c in range(len(texts)) for j in range(spec.images_per_caption)]
    info(f"prior preservation: the base model draws {len(jobs)} images "
         f"({len(texts)} captions x {spec.images_per_caption})")
    out = []
    for s in range(0, len(jobs), spec.batch_size):
        batch = jobs[s : s + spec.batch_size]
        generators = [torch.Generator().manual_seed(image_seed(seed, c, j)) for c, j in batch]
        result = pipe([texts[c] for c, _ in batch], num_inference_steps=spec.steps,
                      guidance_scale=spec.guidance_scale, generator=generators,
                      output_type="latent")
        out.append(result.images.float().cpu())
    return torch.cat(out)
