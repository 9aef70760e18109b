"""Train a Fair Mapping: only the map learns; text encoder and denoiser stay frozen.

Each step takes a batch of neutral prompts v, maps them (v' = M(v)) and minimises
L_text(v', v) + lambda * sum over attributes of L_fair(d(v', v_1), ..., d(v', v_K)).
The distance d is measured either between token-averaged embeddings (the paper) or between the
frozen denoiser's noise predictions on the same noisy latents (what the generator does with them).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from equigen.manifest import run_manifest
from equigen.methods.fairmap.losses import embedding_distance, fair_distance_penalty, text_consistency
from equigen.methods.fairmap.mapping import FairMap, FairMapping, text_width
from equigen.methods.fairmap.prompts import FairMapConfig, PromptTriples, build_prompts
from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE
from equigen.utils.console import info, make_progress
from equigen.utils.io import write_csv_atomic

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

LOSS_LOG = "loss.csv"


@torch.no_grad()
def encode_texts(pipe: "DiffusionPipeline", texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(N, L, D) per-token embeddings from the pipeline's own (frozen) text encoder."""
    chunks = [pipe.encode_prompt(list(texts[s : s + batch_size]), pipe.device, 1, False)[0]
              for s in range(0, len(texts), batch_size)]
    return torch.cat(chunks).float()


@dataclass
class EncodedPrompts:
    neutral: torch.Tensor  # (N, L, D)
    variants: dict[str, torch.Tensor]  # attribute -> (N, K, L, D)
    references: dict[str, list[list[str]]]  # attribute -> [prompt][group]: PromptTriples.reference_variants

    @classmethod
    def of(cls, pipe: "DiffusionPipeline", prompts: PromptTriples) -> "EncodedPrompts":
        variants = {}
        for name, rows in prompts.variants.items():
            k = len(rows[0])
            flat = encode_texts(pipe, [t for row in rows for t in row])
            variants[name] = flat.view(len(rows), k, *flat.shape[1:])
        references = {name: prompts.reference_variants(name) for name in prompts.variants}
        return cls(encode_texts(pipe, prompts.neutral), variants, references)


@torch.no_grad()
def draw_latents(pipe: "DiffusionPipeline", texts: Sequence[str], seeds: Sequence[int],
                 steps: int = 20) -> torch.Tensor:
    """Clean latents the frozen model draws for ``texts``, one seed each (the default guidance)."""
    out = []
    for s in range(0, len(texts), 16):
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds[s : s + 16]]
        out.append(pipe(list(texts[s : s + 16]), output_type="latent", num_inference_steps=steps,
                        guidance_scale=DEFAULT_GUIDANCE_SCALE, generator=generators).images.float().cpu())
    return torch.cat(out)


def group_latents(pipe: "DiffusionPipeline", prompts: PromptTriples, cfg: FairMapConfig) -> torch.Tensor:
    """Latents the frozen model draws for each concept's group variants (first template),
    ``latent_pool`` per (concept, group): a pool balanced over the groups by construction."""
    texts = [t for rows in prompts.variants.values() for row in rows[: len(cfg.concepts)]
             for t in row for _ in range(cfg.latent_pool)]
    return draw_latents(pipe, texts, [cfg.seed * 100_003 + i for i in range(len(texts))],
                        cfg.latent_steps)


class FairDistance:
    """d(v', v_j) for a batch: (B, L, D) mapped and (B, K, L, D) group embeddings -> (B, K)."""

    def __init__(self, cfg: FairMapConfig, pipe: "DiffusionPipeline",
                 prompts: PromptTriples | None = None):
        self.cfg = cfg
        self.pipe = pipe
        self.unet = pipe.unet if cfg.distance == "denoiser" else None
        self.pool: torch.Tensor | None = None
        self.pools_by_text: dict[str, torch.Tensor] = {}  # "group": latents drawn for one prompt
        if self.unet is not None:
            self.unet.requires_grad_(False).eval()
            self.num_timesteps = int(pipe.scheduler.config.num_train_timesteps)
            self.noise_sigma = float(getattr(pipe.scheduler, "init_noise_sigma", 1.0))
            if cfg.noisy_latents != "noise":
                from diffusers import DDPMScheduler

                self.noising = DDPMScheduler.from_config(pipe.scheduler.config)
            if cfg.noisy_latents == "generated":
                if prompts is None:
                    raise ValueError("noisy_latents: generated needs the training prompts")
                self.pool = group_latents(pipe, prompts, cfg)

    def __call__(self, mapped: torch.Tensor, groups: torch.Tensor, generator: torch.Generator,
                 references: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
        """``references`` (B x K prompts whose generations stand for each group) is needed by
        ``noisy_latents: group`` only."""
        if self.unet is None:
            return embedding_distance(mapped, groups, self.cfg.embedding_distance)
        if self.cfg.noisy_latents == "group":
            if references is None:
                raise ValueError("noisy_latents: group needs each row's reference prompts")
            return self._group_distance(mapped, groups, generator, references)
        return self._denoiser_distance(mapped, groups, generator)

    def _noise_and_timesteps(self, b: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.unet.config
        noise = torch.randn(b, config.in_channels, config.sample_size, config.sample_size,
                            generator=generator)
        lo, hi = self.cfg.timesteps
        t = torch.randint(int(lo * (self.num_timesteps - 1)), int(hi * (self.num_timesteps - 1)) + 1,
                          (b,), generator=generator)
        return noise, t

    def _eps(self, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        device, dtype = embeddings.device, self.unet.dtype
        return self.unet(latents.to(device, dtype), t.to(device),
                         encoder_hidden_states=embeddings.to(dtype)).sample

    def _denoiser_distance(self, mapped: torch.Tensor, groups: torch.Tensor,
                           generator: torch.Generator) -> torch.Tensor:
        """||eps(x_t, t, v') - eps(x_t, t, v_j)|| on one x_t per row, shared by its K groups:
        pure noise (close to any image's x_t at high t) or a noised latent from the pool."""
        b, k = groups.shape[:2]
        noise, t = self._noise_and_timesteps(b, generator)
        if self.pool is None:
            latents = noise * self.noise_sigma
        else:
            clean = self.pool[torch.randint(len(self.pool), (b,), generator=generator)]
            latents = self.noising.add_noise(clean, noise, t)
        eps_mapped = self._eps(latents, t, mapped)  # once per row: the K groups share x_t
        with torch.no_grad():
            eps_groups = self._eps(latents.repeat_interleave(k, 0), t.repeat_interleave(k, 0),
                                   groups.flatten(0, 1))
        diff = eps_mapped.unsqueeze(1) - eps_groups.view(b, k, *eps_groups.shape[1:])
        return diff.float().flatten(2).norm(dim=-1)

    def _group_distance(self, mapped: torch.Tensor, groups: torch.Tensor, generator: torch.Generator,
                        references: Sequence[Sequence[str]]) -> torch.Tensor:
        """d_j = ||eps(x_t, t, v') - eps(x_t, t, v_j)||^2 with x_t noised from a latent drawn for
        group j's prompt, the same noise and t for all j of a row (so the groups differ only in
        their images): in expectation over t, the diffusion bound on KL(p_j || p_mapped)."""
        b, k = groups.shape[:2]
        self._draw_missing([text for row in references for text in row])
        clean = torch.stack([
            self.pools_by_text[text][torch.randint(self.cfg.latent_pool, (), generator=generator)]
            for row in references for text in row])  # (B*K, C, H, W)
        noise, t = self._noise_and_timesteps(b, generator)
        noise, t = noise.repeat_interleave(k, 0), t.repeat_interleave(k, 0)
        latents = self.noising.add_noise(clean, noise, t)
        eps_mapped = self._eps(latents, t, mapped.repeat_interleave(k, 0))  # one x_t per group
        with torch.no_grad():
            eps_groups = self._eps(latents, t, groups.flatten(0, 1))
        return (eps_mapped - eps_groups).float().flatten(1).norm(dim=-1).view(b, k).pow(2)

    def _draw_missing(self, texts: Sequence[str]) -> None:
        missing = sorted(set(texts) - set(self.pools_by_text))
        if missing:
            pool = self.cfg.latent_pool
            seeds = [self.cfg.seed * 100_003 + zlib.crc32(t.encode()) + r for t in missing for r in range(pool)]
            drawn = draw_latents(self.pipe, [t for t in missing for _ in range(pool)], seeds,
                                 self.cfg.latent_steps)
            for i, text in enumerate(missing):
                self.pools_by_text[text] = drawn[i * pool : (i + 1) * pool]


def fairmap_losses(fairmap: FairMap, distance: FairDistance, encoded: EncodedPrompts,
                   index: torch.Tensor, fair_weight: float,
                   generator: torch.Generator) -> dict[str, torch.Tensor]:
    original = encoded.neutral[index]
    mapped = fairmap(original)
    losses = {"text": text_consistency(mapped, original)}
    fair = torch.zeros((), device=mapped.device)
    for name, groups in encoded.variants.items():
        references = [encoded.references[name][i] for i in index.tolist()]
        penalty = fair_distance_penalty(distance(mapped, groups[index], generator, references))
        losses[f"fair_{name}"] = penalty
        fair = fair + penalty
    losses["fair"] = fair
    losses["loss"] = losses["text"] + fair_weight * fair
    return losses


@torch.no_grad()
def mean_penalty(fairmap: FairMap, distance: FairDistance, encoded: EncodedPrompts,
                 seed: int = 1234, repeats: int = 2) -> float:
    """L_fair averaged over all given prompts (fixed noise draws, so before/after compare)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.arange(encoded.neutral.shape[0])
    values = [fairmap_losses(fairmap, distance, encoded, index, 0.0, generator)["fair"].item()
              for _ in range(repeats)]
    return sum(values) / len(values)


def train_fairmap(cfg: FairMapConfig, pipe: "DiffusionPipeline | None" = None,
                  allow_download: bool = False) -> FairMapping:
    """Train a map for ``cfg`` (loading ``cfg.model`` unless a pipeline is given); save it to
    ``cfg.out`` and return it."""
    if pipe is None:
        from equigen.models import load_pipeline

        pipe = load_pipeline(cfg.model, device=cfg.device, allow_download=allow_download)
    torch.manual_seed(cfg.seed)
    with run_manifest(cfg.out, "fairmap train", cfg, seed=cfg.seed) as manifest:
        prompts = build_prompts(cfg)
        encoded = EncodedPrompts.of(pipe, prompts)
        heldout = (EncodedPrompts.of(pipe, build_prompts(cfg, cfg.heldout_concepts))
                   if cfg.heldout_concepts else None)
        fairmap = FairMap(text_width(pipe)).to(pipe.device)
        distance = FairDistance(cfg, pipe, prompts)
        before = {"train": mean_penalty(fairmap, distance, encoded)}
        if heldout is not None:
            before["heldout"] = mean_penalty(fairmap, distance, heldout)

        optimizer = torch.optim.AdamW(fairmap.parameters(), lr=cfg.lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.steps)
        generator = torch.Generator().manual_seed(cfg.seed)
        n = encoded.neutral.shape[0]
        log: list[dict[str, float]] = []
        start = time.perf_counter()
        with make_progress() as progress:
            task = progress.add_task("training the map", total=cfg.steps)
            for step in range(1, cfg.steps + 1):
                index = torch.randperm(n, generator=generator)[: cfg.batch_size]
                losses = fairmap_losses(fairmap, distance, encoded, index, cfg.fair_weight, generator)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                optimizer.step()
                schedule.step()
                log.append({"step": step, **{k: round(v.item(), 6) for k, v in losses.items()}})
                progress.advance(task)
        train_s = time.perf_counter() - start

        after = {"train": mean_penalty(fairmap, distance, encoded)}
        if heldout is not None:
            after["heldout"] = mean_penalty(fairmap, distance, heldout)
        summary: dict[str, Any] = {
            "train_seconds": round(train_s, 2), "prompts": n,
            "fair_penalty_before": before, "fair_penalty_after": after,
            "text_consistency_after": round(text_consistency(fairmap(encoded.neutral),
                                                             encoded.neutral).item(), 6),
        }
        mapping = FairMapping(fairmap.cpu(), cfg.keyword_lists(),
                              {"model": cfg.model, "attributes": list(cfg.attributes),
                               "config": cfg.model_dump(mode="json"), "training": summary})
        mapping.save(cfg.out)
        write_csv_atomic(cfg.out / LOSS_LOG, log)
        manifest["results"] = summary
    info(f"Fair Mapping saved to {cfg.out} (trained {cfg.steps} steps in {train_s:.1f} s; "
         f"fair penalty on training prompts {before['train']:.4f} -> {after['train']:.4f})")
    return mapping
