"""``equigen stablerep probe``: linear probes on frozen features.

Features of a labelled captioned dataset (rows with a ``split`` column: train / test, and label
columns such as ``region``) are extracted once and cached in the run folder. For each label a
linear head is trained on the train split for every learning rate of a small sweep; the rate is
chosen on a validation part of the train split (never on test), the head retrained on the whole
train split, and top-1 reported on test, overall and per group of ``group_by`` (e.g. per tone:
does the representation serve every group equally?).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from pydantic import Field

from equigen.config import StrictModel
from equigen.errors import EquigenError


class ProbeConfig(StrictModel):
    run: Path  # a stablerep train run
    data: Path = Path("data/probe")  # `equigen world export probe --out data/probe`
    labels: list[str] = Field(default_factory=lambda: ["region", "occupation", "setting"])
    group_by: Optional[str] = "tone"
    split_column: str = "split"
    lrs: list[float] = Field(default_factory=lambda: [1.0, 0.3, 0.1, 0.03])
    epochs: int = 100
    validation_fraction: float = 0.1
    seed: int = 0


def _cache_key(run: Path, data: Path) -> str:
    state = (run / "checkpoint" / "state.json").read_bytes()
    meta = (data / "metadata.jsonl").read_bytes()
    return hashlib.sha256(state + meta + str(data.resolve()).encode()).hexdigest()[:16]


@torch.no_grad()
def extract_features(encoder, images: list[np.ndarray], batch_size: int = 256) -> torch.Tensor:
    out = []
    for s in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.stack(images[s : s + batch_size])).permute(0, 3, 1, 2)
        out.append(encoder.features(batch.float() / 255.0))
    return torch.cat(out)


def cached_features(cfg: ProbeConfig) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """(features, rows) of the probe dataset, from the run folder's cache when there."""
    from safetensors.torch import load_file, save_file

    from equigen.data.captioned import load_records
    from equigen.methods.stablerep.data import groups_from_captioned
    from equigen.methods.stablerep.train import load_encoder
    from equigen.utils.io import atomic_path

    records = load_records(cfg.data)
    rows = [{**r.attributes, "split": r.attributes.get(cfg.split_column)} for r in records]
    cache = cfg.run / f"features-{_cache_key(cfg.run, cfg.data)}.safetensors"
    if cache.is_file():
        return load_file(str(cache))["features"], rows
    encoder = load_encoder(cfg.run)
    groups = groups_from_captioned(cfg.data, encoder.arch.image_size)
    features = extract_features(encoder, [g[0] for g in groups.images])
    with atomic_path(cache) as tmp:
        save_file({"features": features.contiguous()}, str(tmp))
    return features, rows


def train_linear(x: torch.Tensor, y: torch.Tensor, classes: int, lr: float, epochs: int,
                 seed: int) -> torch.nn.Linear:
    """Full-batch softmax regression (SGD with momentum) on standardised features."""
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
        head.bias.zero_()
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(head(x), y).backward()
        optimizer.step()
    return head


def _accuracy(head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head(x).argmax(-1) == y).float().mean())


def probe_label(features: torch.Tensor, rows: list[dict[str, Any]], label: str,
                cfg: ProbeConfig) -> dict[str, Any]:
    values = [r.get(label) for r in rows]
    if any(v is None for v in values):
        raise EquigenError(f"{cfg.data}: some rows have no {label!r} column")
    classes = sorted({str(v) for v in values})
    y = torch.tensor([classes.index(str(v)) for v in values])
    train = torch.tensor([r["split"] == "train" for r in rows])
    test = torch.tensor([r["split"] == "test" for r in rows])
    if not train.any() or not test.any():
        raise EquigenError(f"{cfg.data}: needs rows with {cfg.split_column} = train and = test")
    mean, std = features[train].mean(0), features[train].std(0).clamp_min(1e-6)
    x = (features - mean) / std
    train_idx = torch.nonzero(train).squeeze(1)
    perm = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.seed))]
    n_val = max(1, int(len(perm) * cfg.validation_fraction))
    val_idx, fit_idx = perm[:n_val], perm[n_val:]
    per_lr = {}
    for lr in cfg.lrs:
        head = train_linear(x[fit_idx], y[fit_idx], len(classes), lr, cfg.epochs, cfg.seed)
        per_lr[lr] = _accuracy(head, x[val_idx], y[val_idx])
    best = max(per_lr, key=lambda k: per_lr[k])
    head = train_linear(x[train], y[train], len(classes), best, cfg.epochs, cfg.seed)
    result: dict[str, Any] = {"classes": classes, "best_lr": best, "validation": per_lr,
                              "test_accuracy": _accuracy(head, x[test], y[test]),
                              "n_train": int(train.sum()), "n_test": int(test.sum())}
    if cfg.group_by:
        groups = [str(r.get(cfg.group_by)) for r in rows]
        test_idx = torch.nonzero(test).squeeze(1).tolist()
        per_group = {}
        for g in sorted({groups[i] for i in test_idx}):
            idx = torch.tensor([i for i in test_idx if groups[i] == g])
            per_group[g] = _accuracy(head, x[idx], y[idx])
        result[f"by_{cfg.group_by}"] = per_group
        result["group_gap"] = max(per_group.values()) - min(per_group.values())
    return result


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    from equigen.utils.io import write_json_atomic

    torch.manual_seed(cfg.seed)
    features, rows = cached_features(cfg)
    results = {label: probe_label(features, rows, label, cfg) for label in cfg.labels}
    results["mean_test_accuracy"] = float(np.mean([results[l]["test_accuracy"] for l in cfg.labels]))
    write_json_atomic(cfg.run / "probe.json", {"config": cfg.model_dump(mode="json"), **results})
    return results
