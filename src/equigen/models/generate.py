"""Seeded, batched generation: every image has its own seed, so any one can be regenerated alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch
from PIL import Image

from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS
from equigen.utils.console import make_progress

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from equigen.models.loading import LoraScope

# (pipe, prompts) -> (prompt_embeds, negative_prompt_embeds), e.g. FairMapping.encode
PromptEncoder = Callable[["DiffusionPipeline", Sequence[str]], "tuple[torch.Tensor, torch.Tensor]"]


def image_seed(base_seed: int, prompt_index: int, image_index: int) -> int:
    """The seed of image ``image_index`` of prompt ``prompt_index`` (stable across runs)."""
    return (base_seed * 1_000_003 + prompt_index) * 100_003 + image_index


@torch.no_grad()
def generate_images(
    pipe: "DiffusionPipeline",
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 16,
    size: int | None = None,
    description: str = "generating",
    prompt_encoder: Optional[PromptEncoder] = None,
    lora_scope: Optional["LoraScope"] = None,
) -> list[Image.Image]:
    """One image per (prompt, seed) pair, in order, generated ``batch_size`` at a time.

    ``prompt_encoder`` replaces the pipeline's own prompt encoding (it returns
    ``prompt_embeds`` and ``negative_prompt_embeds``), which is how an embedding-space method
    such as Fair Mapping is applied without changing the pipeline.

    ``lora_scope`` (from :func:`~equigen.models.loading.apply_lora`): the loaded LoRA is switched
    off for the prompts outside it, which the base model then draws exactly as without the LoRA.

    Each image gets its own ``torch.Generator``, so a batch of 16 and 16 batches of 1 give the
    same images (up to float rounding of batched kernels).
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor

    def draw(batch_prompts: list[str], batch_seeds: Sequence[int]) -> list[Image.Image]:
        generators = [torch.Generator().manual_seed(int(s)) for s in batch_seeds]
        if prompt_encoder is None:
            text: dict = {"prompt": batch_prompts}
        else:
            embeds, negative = prompt_encoder(pipe, batch_prompts)
            text = {"prompt_embeds": embeds, "negative_prompt_embeds": negative}
        return pipe(**text, num_inference_steps=steps, guidance_scale=guidance_scale,
                    height=size, width=size, generator=generators).images

    images: list[Image.Image] = []
    with make_progress() as progress:
        task = progress.add_task(description, total=len(prompts))
        for start in range(0, len(prompts), batch_size):
            batch_prompts = list(prompts[start : start + batch_size])
            batch_seeds = seeds[start : start + batch_size]
            if lora_scope is None:
                images.extend(draw(batch_prompts, batch_seeds))
            else:
                images.extend(_draw_scoped(pipe, lora_scope, draw, batch_prompts, batch_seeds))
            progress.advance(task, len(batch_prompts))
    return images


def _draw_scoped(pipe: "DiffusionPipeline", scope: "LoraScope", draw, prompts: list[str],
                 seeds: Sequence[int]) -> list[Image.Image]:
    """``draw`` the prompts in the LoRA's scope with it and the others without it, in order."""
    inside = [scope.applies_to(p) for p in prompts]
    images: list[Image.Image | None] = [None] * len(prompts)
    try:
        for lora_on in (True, False):
            rows = [i for i, flag in enumerate(inside) if flag is lora_on]
            if not rows:
                continue
            if lora_on:
                pipe.enable_lora()
            else:
                pipe.disable_lora()
            for i, image in zip(rows, draw([prompts[i] for i in rows], [seeds[i] for i in rows])):
                images[i] = image
    finally:
        pipe.enable_lora()
    return images  # type: ignore[return-value]
