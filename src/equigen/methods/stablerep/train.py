"""``equigen stablerep train``: StableRep, StableRep+, and the SimCLR / CLIP baselines on one trainer.

Each step samples n captions; the method decides what a batch is:

- ``stablerep``: m images of each caption (synthetic), one augmented view each; all images of a
  caption are positives of each other (multi-positive contrastive loss, tau 0.1).
- ``stablerep_plus``: the same + 0.5 (L_i2t + L_t2i) against a text tower on frozen sentence
  embeddings, learnable logit scale.
- ``simclr``: one image per caption seen twice under different augmentations (NT-Xent, i.e.
  the multi-positive loss with m = 2 views of one image).
- ``clip``: one image per caption and its caption (image-text loss only).

Runs on one CPU as it is, or on many GPUs/nodes under ``accelerate launch`` (the losses gather
features across ranks with gradient). Checkpoints (safetensors weights, optimizer and sampler
state loaded with ``weights_only=True``) every ``checkpoint_every`` steps; a stopped run resumes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field

from equigen.config import StrictModel
from equigen.manifest import run_manifest
from equigen.methods.stablerep.augment import BatchedSimCLRAugment
from equigen.methods.stablerep.data import GroupSampler, load_groups
from equigen.methods.stablerep.losses import (
    ImageTextContrastiveLoss,
    MultiPositiveContrastiveLoss,
)
from equigen.methods.stablerep.model import ContrastiveEncoder, EncoderArch, TextTower
from equigen.utils.checkpoint import load_checkpoint, save_checkpoint
from equigen.utils.console import info, make_progress
from equigen.utils.io import append_csv

Method = Literal["stablerep", "stablerep_plus", "simclr", "clip"]
ENCODER = "encoder"


class StableRepConfig(StrictModel):
    method: Method = "stablerep"
    data: Path  # synth shards folder, or a captioned dataset folder (real images)
    limit_captions: Optional[int] = None
    arch: EncoderArch = Field(default_factory=EncoderArch)
    captions_per_batch: int = Field(32, ge=2)  # n
    images_per_caption: int = Field(4, ge=1)  # m (stablerep*: >= 2)
    steps: int = Field(1000, ge=1)
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 50
    tau: float = 0.1
    text_weight: float = 0.5  # StableRep+
    min_crop_scale: float = 0.08
    checkpoint_every: int = 100
    seed: int = 0
    out: Path = Path("runs/stablerep")

    def views(self) -> int:
        return 2 if self.method == "simclr" else 1

    def uses_text(self) -> bool:
        return self.method in ("stablerep_plus", "clip")


def lr_at(step: int, cfg: StableRepConfig) -> float:
    """Linear warmup to lr, then cosine to 0 (step counts from 0)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sentence_embeddings(captions: list[str], batch_size: int = 256) -> torch.Tensor:
    """Frozen MiniLM sentence embeddings (masked token mean), one per caption."""
    from equigen.world.model import load_text_encoder

    encoder, tokenizer = load_text_encoder()
    out = []
    with torch.no_grad():
        for s in range(0, len(captions), batch_size):
            tokens = tokenizer(captions[s : s + batch_size], padding=True, truncation=True,
                               return_tensors="pt")
            hidden = encoder(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            out.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


class Batches:
    """Turns sampled (caption, image indices) into augmented image tensors and caption ids.

    The sampler and the augmentations draw from one generator, so its state (checkpointed with
    the sampler's) is all a resumed run needs to see the same batches."""

    def __init__(self, cfg: StableRepConfig, groups, generator: torch.Generator):
        m = 1 if cfg.method in ("simclr", "clip") else cfg.images_per_caption
        if cfg.method in ("stablerep", "stablerep_plus") and m < 2:
            raise ValueError("StableRep needs images_per_caption >= 2 (positives per caption)")
        self.cfg = cfg
        self.groups = groups
        self.generator = generator
        self.sampler = GroupSampler(groups, cfg.captions_per_batch, m, generator)
        self.augment = BatchedSimCLRAugment(cfg.arch.image_size, cfg.min_crop_scale)

    def next(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(images, caption ids): uint8 images go to ``device`` and are augmented there."""
        raw, ids = [], []
        for caption, picks in self.sampler.next_batch():
            for p in picks:
                raw.extend([self.groups.images[caption][p]] * self.cfg.views())
                ids.extend([caption] * self.cfg.views())
        images = torch.from_numpy(np.stack(raw)).to(device).permute(0, 3, 1, 2)
        return self.augment(images, self.generator), torch.tensor(ids, device=device)


def train_stablerep(cfg: StableRepConfig) -> dict[str, Any]:
    """Train (or resume) one encoder; return the run summary (also in the manifest)."""
    from accelerate import Accelerator

    accelerator = Accelerator()
    rank = accelerator.process_index
    torch.manual_seed(cfg.seed + rank)
    groups = load_groups(cfg.data, cfg.arch.image_size, cfg.limit_captions)
    if cfg.method in ("stablerep", "stablerep_plus") and min(len(g) for g in groups.images) < 2:
        raise ValueError(f"{cfg.data}: StableRep needs >= 2 images per caption; this data has "
                         f"captions with one image (use method simclr or clip for real data)")
    info(f"{len(groups)} captions, {groups.total_images} images from {cfg.data}")

    encoder = ContrastiveEncoder(cfg.arch)
    modules: dict[str, torch.nn.Module] = {ENCODER: encoder}
    image_loss = MultiPositiveContrastiveLoss(cfg.tau)
    text = None
    if cfg.uses_text():
        text = sentence_embeddings(groups.captions)
        modules["text_tower"] = TextTower(text.shape[1], cfg.arch.head[0], cfg.arch.head[-1])
        modules["image_text_loss"] = ImageTextContrastiveLoss()
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    batches = Batches(cfg, groups, torch.Generator().manual_seed(cfg.seed * 1000 + rank))

    start_step = 0
    restored = load_checkpoint(cfg.out, modules)  # every rank restores the same weights
    if restored is not None:
        start_step, optim_state, _ = restored
        optimizer.load_state_dict(optim_state["optimizer"])
        batches.sampler.load_state(optim_state[f"sampler{rank}"])
        info(f"resumed from step {start_step}")
    wrapped = accelerator.prepare(*modules.values(), optimizer)
    prepared = dict(zip(modules, wrapped[:-1]))
    optimizer = wrapped[-1]

    log_rows: list[dict[str, float]] = []
    with run_manifest(cfg.out, f"stablerep train ({cfg.method})", cfg, seed=cfg.seed) as manifest:
        started = time.perf_counter()
        with make_progress() as progress:
            task = progress.add_task(f"training {cfg.method}", total=cfg.steps, completed=start_step)
            for step in range(start_step, cfg.steps):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, cfg)
                images, ids = batches.next(accelerator.device)
                loss, parts = _loss(cfg, prepared, image_loss, images, ids, text)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                optimizer.step()
                log_rows.append({"step": step + 1, "loss": round(loss.item(), 6), **parts})
                progress.advance(task)
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                    _checkpoint(cfg, accelerator, modules, optimizer, batches, step + 1)
                    if accelerator.is_main_process:
                        append_csv(cfg.out / "loss.csv", log_rows)
                    log_rows = []
        summary = {"steps": cfg.steps, "resumed_from": start_step,
                   "seconds": round(time.perf_counter() - started, 2),
                   "captions": len(groups), "images": groups.total_images}
        manifest["results"] = summary
    return summary


def _loss(cfg, modules, image_loss, images, ids, text) -> tuple[torch.Tensor, dict[str, float]]:
    parts: dict[str, float] = {}
    loss = torch.zeros((), device=images.device)
    if cfg.method != "clip":
        projected = modules[ENCODER](images)
        mp = image_loss(projected, ids)
        loss = loss + mp
        parts["multi_positive"] = round(mp.item(), 6)
    if cfg.uses_text():
        if cfg.method == "clip":
            projected = modules[ENCODER](images)
        text_features = modules["text_tower"](text.to(images.device)[ids])
        it = modules["image_text_loss"](projected, text_features, ids)
        loss = loss + (cfg.text_weight if cfg.method != "clip" else 1.0) * it
        parts["image_text"] = round(it.item(), 6)
    return loss, parts


def _checkpoint(cfg, accelerator, modules, optimizer, batches, step: int) -> None:
    # every rank's sampler state is needed to resume exactly; gather them to rank 0
    states = [batches.sampler.state()]
    if accelerator.num_processes > 1:
        import torch.distributed as dist

        states = [None] * accelerator.num_processes
        dist.all_gather_object(states, states[0])
    if accelerator.is_main_process:
        unwrapped = {name: accelerator.unwrap_model(m) for name, m in modules.items()}
        optim_state = {"optimizer": optimizer.state_dict(),
                       **{f"sampler{r}": s for r, s in enumerate(states)}}
        save_checkpoint(cfg.out, step, unwrapped, optim_state, {"method": cfg.method})
    accelerator.wait_for_everyone()


def load_encoder(run: str | Path) -> ContrastiveEncoder:
    """The trained encoder of a run folder (from its last checkpoint)."""
    import json

    from equigen.errors import EquigenError

    manifest = Path(run) / "manifest.json"
    if not manifest.is_file():
        raise EquigenError(f"{run}: not a stablerep run (no manifest.json)")
    cfg = StableRepConfig.model_validate(json.loads(manifest.read_text())["config"])
    encoder = ContrastiveEncoder(cfg.arch)
    if load_checkpoint(Path(run), {ENCODER: encoder}) is None:
        raise EquigenError(f"{run}: no checkpoint yet")
    return encoder.eval()
