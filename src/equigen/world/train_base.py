"""Train the mini-world base model on the biased ``web`` corpus: ``equigen world train-base``.

Stages, each resumable and skipped when its output exists:

1. **render** ``data.n_images`` scenes of the ``web`` distribution (``data/images.npy`` + rows);
2. **vae**: AutoencoderKL, 64x64 -> 16x16x4, L1 + MSE reconstruction + a small KL term;
3. **encode**: every image to latents (posterior mean, scaled to unit variance) and every distinct
   caption to MiniLM token states (``data/latents.safetensors``, ``data/text.safetensors``);
4. **unet**: UNet2DConditionModel, epsilon prediction on SD's noise schedule, caption dropout for
   classifier-free guidance, min-SNR loss weighting, EMA of the weights;
5. **recaption** (optional, ``recaption:``, one or more rounds): the finished UNet continues on
   the same images, a share of the draws captioned by a recaption that also names the chosen
   attributes (the scraped captions name a tone for 20% of the images, too rarely for the model to
   follow the word). Each round continues the previous one with its own schedule, so a model can
   be trained further by appending a round without changing what the earlier rounds were;
6. **export**: a StableDiffusionPipeline folder (VAE + EMA UNet in fp16, scheduler) in ``pipeline/``.

``init_from`` continues an exported model (the shipped one, say) instead of its lost run folder:
the run folder is seeded with the pipeline's VAE and, for every stage its ``TRAINING.json`` says
it finished, its UNet, so that training resumes at the first stage it did not reach (a new
recaption round appended to the config). An exported pipeline keeps only the EMA weights, so
the seeded stage's raw weights are the EMA weights too, and its optimizer starts afresh.

Every random draw of step ``k`` comes from a generator seeded with (seed, k), so a resumed run
continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import csv
import json
import math
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from safetensors.torch import load_file, save_file

from equigen.config import StrictModel
from equigen.errors import EquigenError
from equigen.utils.checkpoint import load_checkpoint, save_checkpoint
from equigen.utils.console import info, make_progress
from equigen.utils.io import atomic_path, write_json_atomic, write_jsonl_atomic
from equigen.world.model import (
    UNetArch,
    VAEArch,
    assemble_pipeline,
    build_unet,
    build_vae,
    load_text_encoder,
    save_pipeline_without_text_encoder,
    training_scheduler,
)
from equigen.world.render import render_rows


class DataConfig(StrictModel):
    distribution: str = "web"
    n_images: int = 40000
    image_size: int = 64
    seed: int = 0
    workers: int = 2  # processes rendering images


class VAETrainConfig(StrictModel):
    arch: VAEArch = Field(default_factory=VAEArch)
    steps: int = 450
    batch_size: int = 32
    lr: float = 5e-4
    kl_weight: float = 1e-6


class UNetTrainConfig(StrictModel):
    arch: UNetArch = Field(default_factory=UNetArch)
    steps: int = 8000
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    caption_dropout: float = 0.1  # share of captions replaced by "" (classifier-free guidance)
    ema_decay: float = 0.999
    min_snr_gamma: Optional[float] = 5.0  # None: plain MSE
    bf16: bool = False  # bfloat16 autocast; measured 5x slower than fp32 on this 2-core CPU
    grad_clip: float = 1.0
    channels_last: bool = True  # ~13% faster on this CPU


class TimestepBias(StrictModel):
    """Draw the noisiest (``later``) or the least noisy (``earlier``) ``portion`` of the timesteps
    ``multiplier`` times as often as the others: the ``--timestep_bias_*`` options of diffusers'
    SDXL training script. With epsilon prediction an error in the predicted image at high noise
    costs little (its weight is the SNR), yet that is where a prompt's mix of tones is decided."""

    strategy: Literal["later", "earlier"] = "later"
    multiplier: float = Field(2.0, gt=0)
    portion: float = Field(0.25, gt=0, le=1)


def timestep_weights(bias: TimestepBias, num_timesteps: int) -> torch.Tensor:
    """Sampling weights over timesteps 0..num_timesteps-1 (t = num_timesteps-1 is the noisiest)."""
    weights = torch.ones(num_timesteps, dtype=torch.float64)
    biased = max(1, round(bias.portion * num_timesteps))
    if bias.strategy == "later":
        weights[-biased:] *= bias.multiplier
    else:
        weights[:biased] *= bias.multiplier
    return weights / weights.sum()


class RecaptionConfig(StrictModel):
    """One round: continue the UNet where a share of the draws use a recaption naming ``attributes``.

    Same images; each recaption is drawn from the row's own caption seed with the attributes
    forced (``captions.caption(always_name=...)``): whatever else the scraped caption named it
    names too, in possibly other words, as recaptioning pipelines (DALL-E 3) do. Captions that do
    not name them keep their images, so the bias of neutral prompts is still the corpus's.
    Batch size, caption dropout, EMA and loss weighting are the ``unet`` stage's.
    """

    attributes: list[Literal["tone", "region", "occupation", "setting"]] = ["tone"]
    probability: float = Field(0.5, ge=0.0, le=1.0)  # share of draws that use the recaption
    steps: int = Field(3000, gt=0)
    lr: float = 1e-4
    warmup_steps: int = 100
    timestep_bias: Optional[TimestepBias] = None  # None: timesteps drawn uniformly


class BaseTrainConfig(StrictModel):
    out: Path = Path("runs/world-base")
    seed: int = 0
    threads: Optional[int] = None  # torch threads; None: torch's default
    checkpoint_every: int = 200
    log_every: int = 20
    data: DataConfig = Field(default_factory=DataConfig)
    vae: VAETrainConfig = Field(default_factory=VAETrainConfig)
    unet: UNetTrainConfig = Field(default_factory=UNetTrainConfig)
    recaption: list[RecaptionConfig] = []  # rounds, each continuing the previous one
    # An exported base-model pipeline (folder with TRAINING.json, or "mini-world") to continue.
    init_from: Optional[str] = None

    @field_validator("recaption", mode="before")
    @classmethod
    def _one_round_or_many(cls, value: Any) -> Any:
        """``recaption:`` may be one round (a mapping, as configs before rounds had) or a list."""
        if value is None:
            return []
        return [value] if isinstance(value, dict) else value


def recaption_stage(round_number: int) -> str:
    """The stage (folder) name of recaption round 1, 2, ...: ``recaption``, ``recaption-2``, ..."""
    return "recaption" if round_number == 1 else f"recaption-{round_number}"


def step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    """The generator for one step: a function of (seed, stage, step) only, so resume is exact."""
    if stage.startswith("recaption"):
        salt = 2 + (int(stage.split("-")[1]) if "-" in stage else 1)
    else:
        salt = {"vae": 1, "unet": 2}[stage]
    return torch.Generator().manual_seed((seed * 1_000_003 + salt) * 10_000_019 + step)


# ------------------------------------------------------------------------------------ 1. render

def _render_chunk(args: tuple[list[dict[str, Any]], int]) -> np.ndarray:
    """Pool worker: one argument, as ``imap`` passes it."""
    return render_rows(*args)


def render_corpus(cfg: BaseTrainConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The training corpus as uint8 images [N, H, W, 3] and their rows (cached in ``data/``)."""
    from equigen.world.distributions import sample_rows
    from equigen.world.scene import load_world

    data_dir = cfg.out / "data"
    images_path, rows_path = data_dir / "images.npy", data_dir / "rows.jsonl"
    if images_path.is_file() and rows_path.is_file():
        rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
        return np.load(images_path), rows
    d = cfg.data
    world = load_world()
    # Held-out combinations never reach training; draw extra rows so n_images remain after.
    drawn = sample_rows(d.distribution, int(d.n_images * 1.3) + 16, seed=d.seed)
    rows = [r for r in drawn if not world.is_heldout(r["occupation"], r["region"], r["setting"])]
    rows = rows[: d.n_images]
    for i, row in enumerate(rows):
        row["file_name"] = f"images/{i:06d}.png"
    chunk = 500
    jobs = [(rows[i : i + chunk], d.image_size) for i in range(0, len(rows), chunk)]
    parts = []
    with make_progress() as progress, get_context("spawn").Pool(d.workers) as pool:
        task = progress.add_task(f"rendering {len(rows)} {d.distribution} images", total=len(rows))
        for part in pool.imap(_render_chunk, jobs):
            parts.append(part)
            progress.advance(task, len(part))
    images = np.concatenate(parts)
    with atomic_path(images_path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, images)
    write_jsonl_atomic(rows_path, rows)
    return images, rows


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# --------------------------------------------------------------------------------------- 2. vae

class _LossLog:
    """``loss.csv`` of a stage; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if path.is_file() and resume_step > 0:
            with path.open() as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["step", "loss", "lr", "seconds"])
            writer.writeheader()
            writer.writerows(rows)

    def append(self, step: int, loss: float, lr: float, seconds: float) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([step, f"{loss:.6f}", f"{lr:.3e}", f"{seconds:.2f}"])


def _cosine_with_warmup(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_vae(cfg: BaseTrainConfig, images: np.ndarray):
    """Train (or resume, or load the finished) VAE."""
    from diffusers import AutoencoderKL

    stage_dir = cfg.out / "vae"
    final = stage_dir / "final"
    if (final / "config.json").is_file():
        return AutoencoderKL.from_pretrained(final, use_safetensors=True)
    v = cfg.vae
    torch.manual_seed(cfg.seed)
    vae = build_vae(v.arch, cfg.data.image_size)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=v.lr, weight_decay=0.0)
    scheduler = _cosine_with_warmup(optimizer, warmup=50, total=v.steps)
    start = _resume(stage_dir, {"vae": vae}, optimizer, scheduler)
    log = _LossLog(stage_dir / "loss.csv", start)
    vae.train()
    _loop(cfg, "vae", v.steps, start, log, optimizer, scheduler,
          lambda gen: _vae_loss(vae, images, v, gen), {"vae": vae}, clip=1.0, params=vae.parameters)
    vae.eval()
    vae.save_pretrained(final, safe_serialization=True)
    return vae


def _vae_loss(vae, images: np.ndarray, v: VAETrainConfig, gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(len(images), (v.batch_size,), generator=gen).numpy()
    x = to_tensor(images[idx])
    posterior = vae.encode(x).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
    recon = vae.decode(z).sample
    return F.l1_loss(recon, x) + F.mse_loss(recon, x) + v.kl_weight * posterior.kl().mean()


# ------------------------------------------------------------------------------------ 3. encode

@torch.no_grad()
def encode_latents(cfg: BaseTrainConfig, vae, images: np.ndarray) -> torch.Tensor:
    """Posterior means of every image, scaled to unit variance (``vae.config.scaling_factor``)."""
    path = cfg.out / "data" / "latents.safetensors"
    if path.is_file():
        stored = load_file(path)
        vae.register_to_config(scaling_factor=float(stored["scaling_factor"]))
        return stored["latents"].float()
    means = []
    with make_progress() as progress:
        task = progress.add_task("encoding latents", total=len(images))
        for i in range(0, len(images), 256):
            means.append(vae.encode(to_tensor(images[i : i + 256])).latent_dist.mean)
            progress.advance(task, len(means[-1]))
    latents = torch.cat(means)
    # A seeded VAE keeps the scale its UNet was trained with.
    scaling = vae.config.scaling_factor if cfg.init_from else 1.0 / latents.std().item()
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(cfg.out / "vae" / "final", safe_serialization=True)
    latents = (latents * scaling).half().contiguous()
    with atomic_path(path) as tmp:
        save_file({"latents": latents, "scaling_factor": torch.tensor(scaling)}, tmp)
    return latents.float()  # the stored (fp16) values, so a resumed run trains on the same data


@torch.no_grad()
def encode_captions(cfg: BaseTrainConfig, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM token states for every distinct caption; index 0 is the empty caption ``""``.

    Returns (states [U, L, 384], caption index per row [N]).
    """
    return _encoded_texts(cfg.out / "data" / "text.safetensors", [row["text"] for row in rows])


def recaption_texts(cfg: BaseTrainConfig, rows: list[dict[str, Any]],
                    attributes: list[str]) -> list[str]:
    """Each row's caption from its own seed with ``attributes`` also named."""
    from equigen.world.captions import caption
    from equigen.world.scene import Scene, load_world

    world = load_world()
    rules = world.distribution(cfg.data.distribution).captions
    always = tuple(attributes)
    return [caption(Scene(r["tone"], r["region"], r["occupation"], r["setting"], r["style"]),
                    r["seed"], rules, world, always_name=always).text for r in rows]


def encode_recaptions(cfg: BaseTrainConfig, rows: list[dict[str, Any]],
                      attributes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``encode_captions`` for the recaptions (cached per attribute list)."""
    return _encoded_texts(cfg.out / "data" / f"text-naming-{'-'.join(attributes)}.safetensors",
                          recaption_texts(cfg, rows, attributes))


def _encoded_texts(path: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    if path.is_file():
        stored = load_file(path)
        return stored["states"].float(), stored["index"]
    encoder, tokenizer = load_text_encoder()
    distinct = [""] + sorted(set(texts))
    position = {c: i for i, c in enumerate(distinct)}
    states = []
    for i in range(0, len(distinct), 256):
        batch = tokenizer(distinct[i : i + 256], padding="max_length", truncation=True,
                          max_length=tokenizer.model_max_length, return_tensors="pt")
        states.append(encoder(batch.input_ids, attention_mask=batch.attention_mask)[0])
    states_t = torch.cat(states).half().contiguous()
    index = torch.tensor([position[text] for text in texts])
    with atomic_path(path) as tmp:
        save_file({"states": states_t, "index": index}, tmp)
    info(f"encoded {len(distinct)} distinct captions ({path.name})")
    return states_t.float(), index


# -------------------------------------------------------------------------------------- 4. unet

def train_unet(cfg: BaseTrainConfig, latents: torch.Tensor, states: torch.Tensor,
               index: torch.Tensor):
    """Train (or resume, or load the finished) UNet; returns the EMA UNet."""
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    stage_dir = cfg.out / "unet"
    final = stage_dir / "final-ema"
    if (final / "config.json").is_file():
        return UNet2DConditionModel.from_pretrained(final, use_safetensors=True)
    u = cfg.unet
    torch.manual_seed(cfg.seed + 1)
    unet = build_unet(u.arch, latent_size=latents.shape[-1], latent_channels=latents.shape[1])
    ema_unet = build_unet(u.arch, latent_size=latents.shape[-1], latent_channels=latents.shape[1])
    ema_unet.load_state_dict(unet.state_dict())
    if u.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    ema = EMAModel(ema_unet.parameters(), decay=u.ema_decay)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=u.lr, weight_decay=u.weight_decay)
    scheduler = _cosine_with_warmup(optimizer, u.warmup_steps, u.steps)
    start = _resume(stage_dir, {"unet": unet, "ema": ema_unet}, optimizer, scheduler)
    ema.shadow_params = [p.clone().detach() for p in ema_unet.parameters()]
    ema.optimization_step = start
    noise_schedule = training_scheduler()
    log = _LossLog(stage_dir / "loss.csv", start)
    unet.train()

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        return _unet_loss(unet, noise_schedule, latents, states, index, u, gen)

    def after_step() -> None:
        ema.step(unet.parameters())

    def sync_ema() -> None:
        ema.copy_to(ema_unet.parameters())

    _loop(cfg, "unet", u.steps, start, log, optimizer, scheduler, loss_fn,
          {"unet": unet, "ema": ema_unet}, clip=u.grad_clip, params=unet.parameters,
          after_step=after_step, before_save=sync_ema)
    sync_ema()
    ema_unet.save_pretrained(final, safe_serialization=True)
    return ema_unet


def _unet_loss(unet, noise_schedule, latents, states, index, u: UNetTrainConfig,
               gen: torch.Generator, recaption: tuple[torch.Tensor, float] | None = None,
               t_weights: torch.Tensor | None = None) -> torch.Tensor:
    """``recaption``: (each row's recaption index into ``states``, share of draws that use it);
    ``t_weights``: sampling weights of the timesteps (None: uniform)."""
    idx = torch.randint(len(latents), (u.batch_size,), generator=gen)
    x0 = latents[idx]
    caption = index[idx].clone()
    if recaption is not None:
        recaption_index, probability = recaption
        use = torch.rand(u.batch_size, generator=gen) < probability
        caption[use] = recaption_index[idx][use]
    caption[torch.rand(u.batch_size, generator=gen) < u.caption_dropout] = 0  # "" for CFG
    noise = torch.randn(x0.shape, generator=gen)
    if t_weights is None:
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (u.batch_size,), generator=gen)
    else:
        t = torch.multinomial(t_weights, u.batch_size, replacement=True, generator=gen)
    noisy = noise_schedule.add_noise(x0, noise, t)
    if u.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=u.bf16):
        pred = unet(noisy, t, encoder_hidden_states=states[caption]).sample
    per_sample = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
    if u.min_snr_gamma is not None:
        alphas = noise_schedule.alphas_cumprod[t]
        snr = alphas / (1 - alphas)
        per_sample = per_sample * torch.clamp(snr, max=u.min_snr_gamma) / snr
    return per_sample.mean()


# --------------------------------------------------------------------------------- 5. recaption

def train_recaption(cfg: BaseTrainConfig, round_number: int, latents: torch.Tensor,
                    states: torch.Tensor, index: torch.Tensor, re_states: torch.Tensor,
                    re_index: torch.Tensor):
    """Recaption round ``round_number`` (1-based): continue the previous stage's finished UNet (its
    last weights and EMA) with recaptions; returns the EMA UNet."""
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    stage = recaption_stage(round_number)
    stage_dir = cfg.out / stage
    final = stage_dir / "final-ema"
    if (final / "config.json").is_file():
        return UNet2DConditionModel.from_pretrained(final, use_safetensors=True)
    u, r = cfg.unet, cfg.recaption[round_number - 1]
    source = cfg.out / ("unet" if round_number == 1 else recaption_stage(round_number - 1))
    unet = UNet2DConditionModel.from_pretrained(source / "final-ema", use_safetensors=True)
    unet.load_state_dict(load_file(source / "checkpoint" / "unet.safetensors"))
    ema_unet = UNet2DConditionModel.from_pretrained(source / "final-ema", use_safetensors=True)
    if u.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=r.lr, weight_decay=u.weight_decay)
    scheduler = _cosine_with_warmup(optimizer, r.warmup_steps, r.steps)
    start = _resume(stage_dir, {"unet": unet, "ema": ema_unet}, optimizer, scheduler)
    ema = EMAModel(ema_unet.parameters(), decay=u.ema_decay)
    # The EMA's decay warm-up continues, not restarts.
    ema.optimization_step = u.steps + sum(p.steps for p in cfg.recaption[:round_number - 1]) + start
    # One table of states: the scraped captions, then the recaptions.
    all_states = torch.cat([states, re_states])
    shifted = re_index + len(states)
    noise_schedule = training_scheduler()
    t_weights = (None if r.timestep_bias is None else
                 timestep_weights(r.timestep_bias, noise_schedule.config.num_train_timesteps))
    log = _LossLog(stage_dir / "loss.csv", start)
    unet.train()

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        return _unet_loss(unet, noise_schedule, latents, all_states, index, u, gen,
                          recaption=(shifted, r.probability), t_weights=t_weights)

    _loop(cfg, stage, r.steps, start, log, optimizer, scheduler, loss_fn,
          {"unet": unet, "ema": ema_unet}, clip=u.grad_clip, params=unet.parameters,
          after_step=lambda: ema.step(unet.parameters()),
          before_save=lambda: ema.copy_to(ema_unet.parameters()))
    ema.copy_to(ema_unet.parameters())
    ema_unet.save_pretrained(final, safe_serialization=True)
    return ema_unet


# --------------------------------------------------------------------------------- 0. seed

def seed_from_pipeline(cfg: BaseTrainConfig) -> None:
    """Write the stages ``cfg.init_from`` finished into ``cfg.out`` (once; see the module doc).

    Checks that the pipeline was trained with this config's ``data``, ``vae`` and ``unet``
    sections and recaption rounds, and fails naming the first difference otherwise.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from equigen.models.loading import NAMED_MODELS

    if (cfg.out / "vae" / "final" / "config.json").is_file():
        return  # seeded (or trained) already
    name = cfg.init_from
    source = NAMED_MODELS[name]() if name in NAMED_MODELS else Path(name)
    record_path = source / "TRAINING.json"
    if not record_path.is_file():
        raise EquigenError(f"init_from: {record_path} not found; give a pipeline exported by "
                           "`equigen world export-base` (or 'mini-world')")
    record = json.loads(record_path.read_text())
    trained = BaseTrainConfig.model_validate(record["config"])
    finished = record["recaption"]
    if any(r["steps"] != r["of_planned"] for r in [record["unet"], *finished]):
        raise EquigenError(f"init_from: {record_path} was exported mid-stage; its weights "
                           "continue no finished stage. Export a run that finished a stage")
    for key in ("data", "vae", "unet"):
        if getattr(trained, key) != getattr(cfg, key):
            raise EquigenError(f"init_from: {record_path} was trained with another `{key}:` "
                               "section than this config; continue it with the config it records")
    if len(finished) > len(cfg.recaption):
        raise EquigenError(f"init_from: {record_path} finished {len(finished)} recaption rounds; "
                           f"this config plans only {len(cfg.recaption)}")
    for number in range(1, len(finished) + 1):
        if trained.recaption[number - 1] != cfg.recaption[number - 1]:
            raise EquigenError(f"init_from: recaption round {number} of {record_path} differs "
                               "from this config's; append new rounds, do not change old ones")

    def finished_stage(stage: str, modules: dict[str, torch.nn.Module], stage_record: dict) -> None:
        save_checkpoint(cfg.out / stage, stage_record["steps"], modules, {},
                        extra={"elapsed_s": stage_record.get("train_seconds"),
                               "seeded_from_ema": True})

    vae = AutoencoderKL.from_pretrained(source / "vae", use_safetensors=True).float()
    vae.save_pretrained(cfg.out / "vae" / "final", safe_serialization=True)
    finished_stage("vae", {"vae": vae}, record["vae"])
    # A pipeline keeps only the EMA weights: they stand in for the raw ones too.
    unet = UNet2DConditionModel.from_pretrained(source / "unet", use_safetensors=True).float()
    stages = [("unet", record["unet"])]
    stages += [(recaption_stage(n), r) for n, r in enumerate(finished, start=1)]
    for stage, stage_record in stages:
        unet.save_pretrained(cfg.out / stage / "final-ema", safe_serialization=True)
        finished_stage(stage, {"unet": unet, "ema": unet}, stage_record)
    info(f"seeded {cfg.out} from {source}: VAE, UNet and {len(finished)} recaption rounds")


# ------------------------------------------------------------------------------ shared loop

def _resume(stage_dir: Path, modules, optimizer, scheduler) -> int:
    found = load_checkpoint(stage_dir, modules)
    if found is None:
        return 0
    step, optim_state, _ = found
    optimizer.load_state_dict(optim_state["optimizer"])
    scheduler.load_state_dict(optim_state["scheduler"])
    info(f"resumed {stage_dir.name} from step {step}")
    return step


def _elapsed_before(stage_dir: Path) -> float:
    """Training seconds spent in earlier runs of this stage (kept in the checkpoint)."""
    state = stage_dir / "checkpoint" / "state.json"
    return float(json.loads(state.read_text()).get("elapsed_s", 0.0)) if state.is_file() else 0.0


def _loop(cfg: BaseTrainConfig, stage: str, total: int, start: int, log: _LossLog, optimizer,
          scheduler, loss_fn, modules, clip: float, params, after_step=None, before_save=None):
    stage_dir = cfg.out / stage
    earlier = _elapsed_before(stage_dir) if start else 0.0

    def elapsed() -> float:
        return earlier + time.perf_counter() - t0

    def save(step: int) -> None:
        if before_save:
            before_save()
        save_checkpoint(stage_dir, step, modules, {"optimizer": optimizer.state_dict(),
                                                   "scheduler": scheduler.state_dict()},
                        extra={"elapsed_s": round(elapsed(), 1), "total_steps": total})

    t0, running = time.perf_counter(), []
    with make_progress() as progress:
        task = progress.add_task(f"training {stage}", total=total, completed=start)
        for step in range(start, total):
            loss = loss_fn(step_generator(cfg.seed, stage, step))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params(), clip)
            optimizer.step()
            scheduler.step()
            if after_step:
                after_step()
            running.append(loss.item())
            done = step + 1
            if done % cfg.log_every == 0 or done == total:
                mean = sum(running) / len(running)
                log.append(done, mean, scheduler.get_last_lr()[0], elapsed())
                progress.update(task, description=f"training {stage} (loss {mean:.4f})")
                running = []
            if done % cfg.checkpoint_every == 0 or done == total:
                save(done)
            progress.advance(task)


# ------------------------------------------------------------------------------------ 5. all

def train_base(cfg: BaseTrainConfig) -> Path:
    """Run every stage (each resumes or is skipped if done); return the pipeline folder."""
    from equigen.manifest import run_manifest

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    timings: dict[str, float] = {}
    with run_manifest(cfg.out, "world train-base", cfg, seed=cfg.seed) as manifest:
        if cfg.init_from:
            seed_from_pipeline(cfg)
        t = time.perf_counter()
        images, rows = render_corpus(cfg)
        timings["render_s"] = time.perf_counter() - t
        t = time.perf_counter()
        vae = train_vae(cfg, images)
        timings["vae_s"] = time.perf_counter() - t
        t = time.perf_counter()
        latents = encode_latents(cfg, vae, images)
        states, index = encode_captions(cfg, rows)
        timings["encode_s"] = time.perf_counter() - t
        t = time.perf_counter()
        unet = train_unet(cfg, latents, states, index)
        timings["unet_s"] = time.perf_counter() - t
        for number, round_cfg in enumerate(cfg.recaption, start=1):
            t = time.perf_counter()
            re_states, re_index = encode_recaptions(cfg, rows, round_cfg.attributes)
            unet = train_recaption(cfg, number, latents, states, index, re_states, re_index)
            timings[f"{recaption_stage(number).replace('-', '_')}_s"] = time.perf_counter() - t
        out = cfg.out / "pipeline"
        save_pipeline_without_text_encoder(assemble_pipeline(vae, unet), out)
        manifest["results"] = {"pipeline": str(out), **{k: round(v, 1) for k, v in timings.items()}}
    write_json_atomic(cfg.out / "timings.json", timings)
    return out


def export_pipeline(run_dir: Path, dest: Path) -> dict[str, Any]:
    """Assemble a pipeline from a run: the finished VAE and the UNet's EMA weights (the final ones,
    or the latest checkpoint of a run still training). Writes ``TRAINING.json`` beside it with the
    config, the steps reached and the training time of each stage."""
    import datetime as dt

    from diffusers import AutoencoderKL

    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cfg = BaseTrainConfig.model_validate(manifest["config"])
    vae = AutoencoderKL.from_pretrained(run_dir / "vae" / "final", use_safetensors=True)
    unet_state = json.loads((run_dir / "unet" / "checkpoint" / "state.json").read_text())
    recaption_rounds, latest = [], run_dir / "unet"
    for number, round_cfg in enumerate(cfg.recaption, start=1):
        stage_dir = run_dir / recaption_stage(number)
        if not (stage_dir / "checkpoint" / "state.json").is_file():
            break  # rounds run in order: none after this one has started
        state = json.loads((stage_dir / "checkpoint" / "state.json").read_text())
        recaption_rounds.append({"steps": state["step"], "of_planned": round_cfg.steps,
                                 "train_seconds": state.get("elapsed_s"), "weights": "EMA"})
        latest = stage_dir
    unet = _latest_ema(cfg, latest)
    save_pipeline_without_text_encoder(assemble_pipeline(vae, unet.eval()), dest)
    vae_state = json.loads((run_dir / "vae" / "checkpoint" / "state.json").read_text())
    record = {
        "command": "equigen world train-base " + " ".join(manifest["argv"][3:]),
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": manifest.get("git_commit"),
        "vae": {"steps": vae_state["step"], "train_seconds": vae_state.get("elapsed_s")},
        "unet": {"steps": unet_state["step"], "of_planned": cfg.unet.steps,
                 "train_seconds": unet_state.get("elapsed_s"), "weights": "EMA"},
        "recaption": recaption_rounds,  # one record per round reached
        "corpus_images": cfg.data.n_images,
        "config": manifest["config"],
    }
    write_json_atomic(Path(dest) / "TRAINING.json", record)
    return record


def _latest_ema(cfg: BaseTrainConfig, stage_dir: Path):
    """A stage's EMA UNet: the final one, or the latest checkpoint's of a stage still training."""
    from diffusers import UNet2DConditionModel

    if (stage_dir / "final-ema" / "config.json").is_file():
        return UNet2DConditionModel.from_pretrained(stage_dir / "final-ema", use_safetensors=True)
    latent_size = cfg.data.image_size // 2 ** (len(cfg.vae.arch.block_out_channels) - 1)
    unet = build_unet(cfg.unet.arch, latent_size, cfg.vae.arch.latent_channels)
    unet.load_state_dict(load_file(stage_dir / "checkpoint" / "ema.safetensors"))
    return unet
