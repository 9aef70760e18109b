"""``equigen scoft train``: LoRA fine-tuning with SCoFT's losses on a curated captioned dataset.

Read top to bottom: load the frozen pipeline and add a LoRA to the UNet's attention (peft through
diffusers' adapter API) -> encode every curated image, caption, generic caption and the negatives'
perceptual features once -> each step draws a batch balanced across cultures, noise and t in
[1, T-1] from a generator seeded by (seed, step, rank), so a resumed run draws exactly what an
uninterrupted one would -> L_LDM and L_M every step; every ``contrastive_every`` steps a guided
20-step rollout to an image for L_C and L_P (see ``rollout.py``) -> AdamW, warmup + cosine, grad
clipping -> checkpoints (LoRA weights in safetensors, optimizer and schedule) -> the LoRA saved
in diffusers format, loadable with ``pipe.load_lora_weights(out)`` or ``--lora out``.

Runs on one CPU as is, or under ``accelerate launch`` (DDP; each rank draws its own batch).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from PIL import Image
from pydantic import Field, model_validator

from equigen.config import StrictModel
from equigen.errors import EquigenError
from equigen.manifest import run_manifest
from equigen.methods.scoft import losses
from equigen.methods.scoft.perceptual import PerceptualNet, PerceptualSpec, build_perceptual
from equigen.methods.scoft.prior import PriorPreservation, PriorSet, build_prior_set
from equigen.methods.scoft.rollout import decode_latent, denoise_to_latent, grad_call_index
from equigen.models.loading import write_lora_scope
from equigen.utils.checkpoint import load_checkpoint, save_checkpoint
from equigen.utils.console import info, make_progress
from equigen.utils.io import append_csv

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


class LossWeights(StrictModel):
    """The official weights; set one to 0 to switch its term off (the paper's ablation)."""

    ldm: float = Field(0.7, ge=0)
    memorization: float = Field(0.3, ge=0)
    contrastive: float = Field(0.05, ge=0)
    perceptual: float = Field(0.01, ge=0)
    prior: float = Field(0.0, ge=0)  # not in the paper: prior preservation (prior.py), 0 = off


class ScoftConfig(StrictModel):
    data: Path  # curated captioned dataset, negatives listed (`equigen scoft negatives`)
    model: str = "mini-world"
    cultures: Optional[list[str]] = None  # train on these cultures only (default: all)
    # The prompts the LoRA will be applied to, saved beside it (equigen_lora.json): those that name
    # one of these words (default: the trained cultures' names); [] = every prompt.
    scope: Optional[list[str]] = None
    out: Path = Path("runs/scoft")
    weights: LossWeights = Field(default_factory=LossWeights)
    rank: int = Field(64, ge=1)  # LoRA rank (official: 64)
    lora_targets: list[str] = Field(default_factory=lambda: list(LORA_TARGETS))
    steps: int = Field(1000, ge=1)  # optimizer steps
    batch_size: int = Field(8, ge=1)  # per process, per micro-batch
    gradient_accumulation: int = Field(1, ge=1)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = 1.0
    contrastive_every: int = Field(10, ge=1)  # L_C / L_P every k-th step
    contrastive_steps: int = Field(20, ge=1)  # denoising steps of the rollout
    contrastive_guidance: float = 4.5
    contrastive_grad: Literal["first", "last", "random"] = "first"
    perceptual: PerceptualSpec = Field(default_factory=PerceptualSpec)  # for L_C
    perceptual_slices: Optional[PerceptualSpec] = None  # for L_P (default: the same extractor)
    prior: Optional[PriorPreservation] = None  # the prompts whose outputs to keep (weights.prior)
    gradient_checkpointing: bool = False
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    checkpoint_every: int = Field(100, ge=1)
    seed: int = 0
    device: Optional[str] = None

    @model_validator(mode="after")
    def _prior_needs_captions(self) -> "ScoftConfig":
        if self.weights.prior > 0 and self.prior is None:
            raise ValueError("weights.prior > 0 needs prior.captions (the prompts to preserve)")
        return self


def step_generator(cfg: ScoftConfig, step: int, rank: int, micro: int = 0) -> torch.Generator:
    """Everything random in a step comes from here: resuming redraws the same batch."""
    return torch.Generator().manual_seed(((cfg.seed * 1_000_003 + step) * 101 + micro) * 997 + rank)


def sample_timesteps(batch: int, num_train_timesteps: int, generator: torch.Generator) -> torch.Tensor:
    """t uniform in [1, T - 1]: never 0 (the official script's crash) and always a valid index."""
    return torch.randint(1, num_train_timesteps, (batch,), generator=generator)


class CuratedSet:
    """The curated rows, encoded once: latents, caption embeddings, perceptual features."""

    def __init__(self, cfg: ScoftConfig, pipe, extractor: PerceptualNet,
                 slicer: Optional[PerceptualNet], device: torch.device):
        from equigen.data.captioned import load_records, resolve_in_root

        records = load_records(cfg.data)
        if cfg.cultures:
            unknown = set(cfg.cultures) - {r.culture for r in records}
            if unknown:
                raise EquigenError(f"{cfg.data}: no rows with culture {sorted(unknown)}; "
                                   f"present: {sorted({str(r.culture) for r in records})}")
            records = [r for r in records if r.culture in cfg.cultures]
        if not records:
            raise EquigenError(f"{cfg.data}: no rows to train on")
        needs_negatives = cfg.weights.contrastive > 0
        if needs_negatives and any(not r.negatives for r in records):
            raise EquigenError(f"{cfg.data}: rows without negatives; run `equigen scoft negatives "
                               f"{cfg.data}` first (or set weights.contrastive=0)")
        if cfg.weights.memorization > 0 and any(not r.generic_text for r in records):
            raise EquigenError(f"{cfg.data}: rows without generic_text (needed by L_M); add it or "
                               f"set weights.memorization=0")
        self.records = records
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        root = Path(cfg.data)

        def tensor_of(relative: str) -> torch.Tensor:
            with Image.open(resolve_in_root(root, relative)) as image:
                pixels = np.asarray(image.convert("RGB").resize((size, size)), dtype=np.float32)
            return torch.from_numpy(pixels / 255.0).permute(2, 0, 1)

        images = torch.stack([tensor_of(r.file_name) for r in records])
        with torch.no_grad():
            latents = []
            for s in range(0, len(images), 32):
                x = images[s : s + 32].to(device, pipe.vae.dtype) * 2 - 1
                latents.append(pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor)
            self.latents = torch.cat(latents).float()
            texts = sorted({r.text for r in records} | {r.generic_text or r.text for r in records} | {""})
            embeds = _encode_texts(pipe, texts, device)
            self.text_index = {t: i for i, t in enumerate(texts)}
            self.text_embeds = embeds
            self.positive_embed = _in_batches(extractor.embed, images, device)
            self.positive_slices = None
            if slicer is not None:
                self.positive_slices = [torch.cat(parts) for parts in zip(
                    *[slicer.slices(images[s : s + 64].to(device)) for s in range(0, len(images), 64)])]
            self.negative_embed = None
            if needs_negatives:
                k = min(len(r.negatives) for r in records)
                negatives = torch.stack([torch.stack([tensor_of(p) for p in r.negatives[:k]])
                                         for r in records])
                flat = _in_batches(extractor.embed, negatives.flatten(0, 1), device)
                self.negative_embed = flat.view(len(records), k, -1)
        self.cultures = sorted({str(r.culture) for r in records})
        self.by_culture = {c: [i for i, r in enumerate(records) if str(r.culture) == c]
                           for c in self.cultures}

    def sample(self, batch: int, generator: torch.Generator) -> list[int]:
        """Rows balanced across cultures: a culture uniformly, then a row of it uniformly."""
        picks = []
        for _ in range(batch):
            culture = self.cultures[int(torch.randint(len(self.cultures), (1,), generator=generator))]
            rows = self.by_culture[culture]
            picks.append(rows[int(torch.randint(len(rows), (1,), generator=generator))])
        return picks

    def embeds(self, texts: list[str]) -> torch.Tensor:
        return self.text_embeds[[self.text_index[t] for t in texts]]


def _encode_texts(pipe, texts: list[str], device) -> torch.Tensor:
    out = []
    for s in range(0, len(texts), 64):
        embeds, _ = pipe.encode_prompt(texts[s : s + 64], device, 1, False)
        out.append(embeds.float())
    return torch.cat(out)


def _in_batches(fn, images: torch.Tensor, device, size: int = 64) -> torch.Tensor:
    return torch.cat([fn(images[s : s + size].to(device)) for s in range(0, len(images), size)])


class LoraState:
    """The UNet's LoRA weights as a checkpointable unit (state_dict / load_state_dict)."""

    def __init__(self, unet):
        self.unet = unet

    def state_dict(self) -> dict[str, torch.Tensor]:
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(self.unet)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from peft.utils import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.unet, state)
        if getattr(result, "unexpected_keys", None):
            raise EquigenError(f"checkpoint LoRA has unexpected keys: {result.unexpected_keys[:3]}")


def add_lora(unet, cfg: ScoftConfig) -> list[torch.nn.Parameter]:
    """Freeze the UNet, add a LoRA adapter on its attention projections; return its parameters."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.rank, init_lora_weights="gaussian",
                                target_modules=cfg.lora_targets))
    params = [p for p in unet.parameters() if p.requires_grad]
    if not params:
        raise EquigenError(f"LoRA targets {cfg.lora_targets} matched no UNet module")
    return params


@contextmanager
def lora_off(unet):
    """The base model for the calls inside: the LoRA switched off."""
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


def save_lora(unet, out: Path) -> Path:
    """Diffusers-format LoRA weights (``pipe.load_lora_weights(out)`` loads them)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from equigen.utils.io import atomic_path

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / LORA_WEIGHTS) as tmp:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        StableDiffusionPipeline.save_lora_weights(str(tmp.parent), unet_lora_layers=state,
                                                  weight_name=tmp.name, safe_serialization=True)
    return out / LORA_WEIGHTS


def lr_lambda(cfg: ScoftConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


class ScoftLoss:
    """Computes the weighted SCoFT loss of one micro-batch; holds the frozen pieces."""

    def __init__(self, cfg: ScoftConfig, pipe, unet, data: CuratedSet, extractor, slicer,
                 noise_scheduler, prior: Optional[PriorSet] = None):
        self.cfg, self.pipe, self.unet, self.data, self.prior = cfg, pipe, unet, data, prior
        self.extractor, self.slicer = extractor, slicer
        self.noise_scheduler = noise_scheduler
        self.prediction_type = noise_scheduler.config.prediction_type
        self.uses_rollout = cfg.weights.contrastive > 0 or cfg.weights.perceptual > 0

    def __call__(self, step: int, rows: list[int], generator: torch.Generator,
                 device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, data, w = self.cfg, self.data, self.cfg.weights
        latents = data.latents[rows].to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        t = sample_timesteps(len(rows), self.noise_scheduler.config.num_train_timesteps, generator).to(device)
        x_t, target = self._noised(latents, noise, t)
        cond = data.embeds([data.records[i].text for i in rows]).to(device)
        prediction = self.unet(x_t, t, encoder_hidden_states=cond).sample
        parts: dict[str, torch.Tensor] = {"ldm": losses.ldm_loss(prediction, target)}
        if w.memorization > 0:
            generic = data.embeds([data.records[i].generic_text for i in rows]).to(device)
            with torch.no_grad():
                generic_prediction = self.unet(x_t, t, encoder_hidden_states=generic).sample
            parts["memorization"] = losses.memorization_loss(prediction, generic_prediction)
        if self.uses_rollout and (step + 1) % cfg.contrastive_every == 0:
            uncond = data.embeds([""]).to(device).expand_as(cond)
            grad_call = grad_call_index(cfg.contrastive_grad, cfg.contrastive_steps, generator)
            latent0 = denoise_to_latent(self.unet, x_t, t, cond, uncond,
                                        self.noise_scheduler.alphas_cumprod, self.prediction_type,
                                        cfg.contrastive_steps, cfg.contrastive_guidance, grad_call)
            image = decode_latent(self.pipe.vae, latent0, cfg.gradient_checkpointing)
            if w.contrastive > 0:
                parts["contrastive"] = losses.self_contrastive_loss(
                    self.extractor.embed(image), data.positive_embed[rows].to(device),
                    data.negative_embed[rows].to(device))
            if w.perceptual > 0:
                parts["perceptual"] = losses.perceptual_loss(
                    self.slicer.slices(image), [s[rows].to(device) for s in data.positive_slices])
        if w.prior > 0:  # drawn last, so the other terms see the same draws with or without it
            prior_latents, prior_cond = self.prior.sample(len(rows), generator)
            prior_latents = prior_latents.to(device)
            prior_noise = torch.randn(prior_latents.shape, generator=generator).to(device)
            prior_t = sample_timesteps(len(rows), self.noise_scheduler.config.num_train_timesteps,
                                       generator).to(device)
            prior_x_t, prior_target = self._noised(prior_latents, prior_noise, prior_t)
            prior_cond = prior_cond.to(device)
            if cfg.prior.target == "base":
                base = getattr(self.unet, "module", self.unet)
                with torch.no_grad(), lora_off(base):
                    prior_target = base(prior_x_t, prior_t, encoder_hidden_states=prior_cond).sample
            prior_prediction = self.unet(prior_x_t, prior_t, encoder_hidden_states=prior_cond).sample
            parts["prior"] = losses.ldm_loss(prior_prediction, prior_target)
        total = sum(getattr(w, name) * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}

    def _noised(self, latents: torch.Tensor, noise: torch.Tensor,
                t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, the UNet's regression target) for the scheduler's prediction type."""
        x_t = self.noise_scheduler.add_noise(latents, noise, t)
        if self.prediction_type == "v_prediction":
            return x_t, self.noise_scheduler.get_velocity(latents, noise, t)
        return x_t, noise


def build_scoft(cfg: ScoftConfig, device: torch.device, allow_download: bool = False):
    """The frozen pipeline with a LoRA on its UNet, the LoRA parameters, and the loss (with the
    curated set encoded): everything a step needs."""
    from diffusers import DDPMScheduler

    from equigen.data.captioned import load_records
    from equigen.models import load_pipeline

    load_records(cfg.data)  # a missing or malformed dataset fails before the model loads
    pipe = load_pipeline(cfg.model, device=str(device), dtype="fp32", allow_download=allow_download)
    for module in (pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    prior = None
    if cfg.weights.prior > 0:  # the base model's own drawings: before the LoRA exists
        prior = build_prior_set(cfg.prior, pipe, cfg.out, cfg.seed, device)
    torch.manual_seed(cfg.seed)  # the LoRA's random initialisation
    params = add_lora(pipe.unet, cfg)
    if cfg.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    pipe.unet.train()
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    extractor = build_perceptual(cfg.perceptual).to(device)
    slicer = None
    if cfg.weights.perceptual > 0:
        slicer = build_perceptual(cfg.perceptual_slices).to(device) if cfg.perceptual_slices else extractor
    data = CuratedSet(cfg, pipe, extractor, slicer, device)
    return pipe, params, ScoftLoss(cfg, pipe, pipe.unet, data, extractor, slicer, noise_scheduler,
                                   prior)


def train_scoft(cfg: ScoftConfig, allow_download: bool = False) -> dict[str, Any]:
    """Train (or resume) a SCoFT LoRA; return the run summary (also in the manifest)."""
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision,
                              cpu=cfg.device == "cpu")
    device, rank = accelerator.device, accelerator.process_index
    pipe, params, compute = build_scoft(cfg, device, allow_download)
    unet, data = pipe.unet, compute.data
    info(f"{len(data.records)} curated rows, cultures {', '.join(data.cultures)}; "
         f"{sum(p.numel() for p in params):,} LoRA parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    lora = LoraState(unet)
    start_step = 0
    restored = load_checkpoint(cfg.out, {"lora": lora})
    if restored is not None:
        start_step, state, _ = restored
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        info(f"resumed from step {start_step}")
    unet, optimizer = accelerator.prepare(unet, optimizer)
    compute.unet = unet  # the (possibly DDP-wrapped) UNet

    rows_log: list[dict[str, Any]] = []
    timings = {"ldm_step_s": [], "rollout_step_s": []}
    with run_manifest(cfg.out, "scoft train", cfg, seed=cfg.seed) as manifest:
        started = time.perf_counter()
        with make_progress() as progress:
            task = progress.add_task("SCoFT", total=cfg.steps, completed=start_step)
            for step in range(start_step, cfg.steps):
                tic = time.perf_counter()
                logged: dict[str, float] = {}
                for micro in range(cfg.gradient_accumulation):
                    generator = step_generator(cfg, step, rank, micro)
                    rows = data.sample(cfg.batch_size, generator)
                    with accelerator.autocast():
                        loss, parts = compute(step, rows, generator, device)
                    accelerator.backward(loss / cfg.gradient_accumulation)
                    for name, value in parts.items():
                        logged[name] = logged.get(name, 0.0) + value / cfg.gradient_accumulation
                    logged["loss"] = logged.get("loss", 0.0) + float(loss.detach()) / cfg.gradient_accumulation
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                elapsed = time.perf_counter() - tic
                key = "rollout_step_s" if "contrastive" in logged or "perceptual" in logged else "ldm_step_s"
                timings[key].append(elapsed)
                rows_log.append({"step": step + 1, "lr": schedule.get_last_lr()[0],
                                 **{k: round(v, 6) for k, v in logged.items()}})
                progress.advance(task)
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        save_checkpoint(cfg.out, step + 1, {"lora": LoraState(accelerator.unwrap_model(unet))},
                                        {"optimizer": optimizer.state_dict(),
                                         "schedule": schedule.state_dict()})
                        _append_log(cfg.out, rows_log)
                    rows_log = []
                    accelerator.wait_for_everyone()
        scope = data.cultures if cfg.scope is None else cfg.scope
        if accelerator.is_main_process:
            save_lora(accelerator.unwrap_model(unet), cfg.out)
            write_lora_scope(cfg.out, scope)
        summary = {"steps": cfg.steps, "resumed_from": start_step,
                   "seconds": round(time.perf_counter() - started, 2),
                   "rows": len(data.records), "cultures": data.cultures,
                   "processes": accelerator.num_processes, "scope": scope,
                   **{k: round(sum(v) / len(v), 4) for k, v in timings.items() if v},
                   "lora": str(cfg.out / LORA_WEIGHTS)}
        manifest["results"] = summary
    return summary


LOG_FIELDS = ["step", "lr", "loss", "ldm", "memorization", "contrastive", "perceptual", "prior"]


def _append_log(out: Path, rows: list[dict[str, Any]]) -> None:
    append_csv(Path(out) / "loss.csv", rows, LOG_FIELDS)
