"""The mini-world's oracle annotators: small classifiers that read each attribute from pixels.

They play the part FairFace or CLIP classifiers play for real images: the renderer knows the
truth, the oracle reads it back from a (generated) image, so generations can be judged. One shared
convolutional trunk with a linear head per attribute (tone, region, occupation, setting, style),
trained on renders of the uniform ``probe`` distribution with mild blur/noise augmentation (so
that VAE-decoded generations, slightly softer than renders, are read as reliably).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from pydantic import Field
from safetensors.torch import load_file, save_file

from equigen.audit.annotators import images_to_tensor
from equigen.config import StrictModel
from equigen.errors import EquigenError
from equigen.utils.console import info, make_progress
from equigen.utils.io import atomic_path, write_json_atomic

ORACLE_DIR = Path(__file__).resolve().parent.parent / "assets" / "oracle"
ATTRIBUTES = ("tone", "region", "occupation", "setting", "style")


def attribute_groups() -> dict[str, list[str]]:
    """The class names of every attribute, in the order of the oracle's outputs."""
    from equigen.world.scene import STYLES, load_world

    world = load_world()
    return {
        "tone": world.tone_names,
        "region": list(world.regions),
        "occupation": list(world.occupations),
        "setting": list(world.settings),
        "style": list(STYLES),
    }


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class OracleNet(nn.Module):
    """Conv trunk (64 -> 4 px, ``width`` x (1, 2, 3, 4) channels) + one linear head per attribute."""

    def __init__(self, groups: dict[str, list[str]], width: int = 32):
        super().__init__()
        channels = [3, width, 2 * width, 3 * width, 4 * width]
        self.trunk = nn.Sequential(*[_block(a, b) for a, b in zip(channels, channels[1:])],
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({a: nn.Linear(channels[-1], len(g)) for a, g in groups.items()})
        self.feature_dim = channels[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (used for FID / diversity / memorization in the mini-world)."""
        return self.trunk(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {a: head(h) for a, head in self.heads.items()}


class OracleAnnotator:
    """The mini-world oracle behind the :class:`~equigen.audit.annotators.Annotator` interface."""

    def __init__(self, net: OracleNet, groups: dict[str, list[str]], image_size: int = 64):
        self.net = net.eval()
        self.groups = groups
        self.image_size = image_size

    @classmethod
    def load(cls, folder: str | Path | None = None) -> "OracleAnnotator":
        folder = Path(folder) if folder is not None else ORACLE_DIR
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise EquigenError(f"no oracle in {folder} (expected config.json + model.safetensors); "
                               "train one with `equigen world train-oracle`")
        config = json.loads(config_path.read_text())
        net = OracleNet(config["groups"], width=config["width"])
        net.load_state_dict(load_file(folder / "model.safetensors"))
        return cls(net, config["groups"], config["image_size"])

    def save(self, folder: str | Path, extra: dict | None = None) -> None:
        folder = Path(folder)
        with atomic_path(folder / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, tmp)
        write_json_atomic(folder / "config.json", {
            "groups": self.groups, "width": self.net.trunk[0][0].out_channels,
            "image_size": self.image_size, **(extra or {}),
        })

    @torch.no_grad()
    def predict_proba(self, images: Sequence[Image.Image] | torch.Tensor,
                      batch_size: int = 256) -> dict[str, torch.Tensor]:
        x = images_to_tensor(images, self.image_size)
        outs: dict[str, list[torch.Tensor]] = {a: [] for a in self.groups}
        for i in range(0, len(x), batch_size):
            for a, logits in self.net(x[i : i + batch_size]).items():
                outs[a].append(logits.softmax(-1))
        return {a: torch.cat(v) for a, v in outs.items()}

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image] | torch.Tensor,
                 batch_size: int = 256) -> torch.Tensor:
        x = images_to_tensor(images, self.image_size)
        return torch.cat([self.net.features(x[i : i + batch_size])
                          for i in range(0, len(x), batch_size)])


# ------------------------------------------------------------------------------------ training

class OracleTrainConfig(StrictModel):
    out: Path = ORACLE_DIR
    n_images: int = 12000  # renders of the probe distribution (its split column is respected)
    seed: int = 0
    width: int = 32
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    augment: bool = True
    workers: int = 2
    threads: int | None = None
    target_accuracy: float = Field(0.98, description="fail loudly below this held-out accuracy")


def labels_of(rows: list[dict], groups: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    index = {a: {name: i for i, name in enumerate(g)} for a, g in groups.items()}
    out = {}
    for a in groups:
        values = [row[a] if a != "tone" else groups["tone"][row["tone"]] for row in rows]
        out[a] = torch.tensor([index[a][v] for v in values])
    return out


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild blur (half the batch) and pixel noise: generations are softer than renders."""
    blur = torch.rand(len(x), generator=gen) < 0.5
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
        x = x.clone()
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    noise = torch.randn(x.shape, generator=gen) * 0.02
    return (x + noise).clamp(0, 1)


def train_oracle(cfg: OracleTrainConfig) -> dict[str, float]:
    """Train the oracle on probe renders; return held-out accuracy per attribute."""
    from equigen.world.distributions import sample_rows
    from equigen.world.render import render_rows

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    groups = attribute_groups()
    rows = sample_rows("probe", cfg.n_images, seed=cfg.seed)
    images = render_rows(rows, 64)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    y = labels_of(rows, groups)
    test = torch.tensor([row["split"] == "test" for row in rows])
    train_idx, test_idx = torch.where(~test)[0], torch.where(test)[0]

    torch.manual_seed(cfg.seed)
    net = OracleNet(groups, cfg.width)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps_per_epoch = (len(train_idx) + cfg.batch_size - 1) // cfg.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr,
                                                   total_steps=cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task("training oracle", total=cfg.epochs * steps_per_epoch)
        for _ in range(cfg.epochs):
            net.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                batch = _augment(x[idx], gen) if cfg.augment else x[idx]
                out = net(batch)
                loss = sum(F.cross_entropy(out[a], y[a][idx]) for a in groups)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                progress.advance(task)
    oracle = OracleAnnotator(net, groups)
    probs = oracle.predict_proba(x[test_idx])
    accuracy = {a: (probs[a].argmax(-1) == y[a][test_idx]).float().mean().item() for a in groups}
    info("held-out accuracy: " + ", ".join(f"{a} {v:.4f}" for a, v in accuracy.items()))
    oracle.save(cfg.out, extra={"heldout_accuracy": accuracy, "n_test": len(test_idx),
                                "train_seconds": round(time.perf_counter() - start, 1),
                                "trained_with": cfg.model_dump(mode="json")})
    low = {a: v for a, v in accuracy.items() if v < cfg.target_accuracy}
    if low:
        raise EquigenError(f"oracle below target {cfg.target_accuracy:.0%} on held-out renders: {low}")
    return accuracy
