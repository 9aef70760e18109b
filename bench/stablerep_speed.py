"""How much does StableRep's data pipeline add to a training step? Same model, same batch size.

    python bench/stablerep_speed.py --data runs/bench-stablerep/synth-w2

Times, interleaved in this run: (a) a full training step as ``equigen stablerep train`` runs it
(sample n captions x m images, augment, forward, loss, backward, AdamW); (b) the bare forward +
loss + backward + AdamW of the same model on one batch prepared once. The target is
(a) / (b) - 1 <= 15%. Writes bench/results/stablerep_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from equigen.config import load_config
from equigen.methods.stablerep.data import load_groups
from equigen.methods.stablerep.losses import MultiPositiveContrastiveLoss
from equigen.methods.stablerep.model import ContrastiveEncoder
from equigen.methods.stablerep.train import Batches, StableRepConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("runs/bench-stablerep/synth-w2"))
    parser.add_argument("--config", type=Path, default=Path("configs/stablerep/mini-world.yaml"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--depth", type=int, default=6)
    args = parser.parse_args()

    cfg = load_config(StableRepConfig, args.config, values={"data": args.data})
    cfg = cfg.model_copy(update={"arch": cfg.arch.model_copy(update={
        "patch_size": args.patch, "backbone_args": {"depth": args.depth}})})
    groups = load_groups(cfg.data, cfg.arch.image_size)
    batches = Batches(cfg, groups, torch.Generator().manual_seed(0))
    model = ContrastiveEncoder(cfg.arch)
    loss_fn = MultiPositiveContrastiveLoss(cfg.tau)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    fixed_images, fixed_ids = batches.next()

    def step(images, ids):
        loss = loss_fn(model(images), ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up
        step(fixed_images, fixed_ids)
    full, bare = [], []
    for _ in range(args.steps):  # interleaved, so machine noise hits both alike
        tic = time.perf_counter()
        step(*batches.next())
        full.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        step(fixed_images, fixed_ids)
        bare.append(time.perf_counter() - tic)
    full_s, bare_s = statistics.median(full), statistics.median(bare)
    report = {"date": str(date.today()),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "batch_images": len(fixed_ids), "arch": cfg.arch.model_dump(),
              "train_step_s": round(full_s, 4), "bare_step_s": round(bare_s, 4),
              "data_pipeline_overhead": round(full_s / bare_s - 1, 4), "target": 0.15}
    out = Path("bench/results/stablerep_speed.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
