"""Resumable training state: a checkpoint folder replaced atomically, weights in safetensors.

A checkpoint is ``<dir>/checkpoint/``: ``<name>.safetensors`` per module, ``optim.pt`` (optimizer
and LR-scheduler state, loaded with ``weights_only=True``) and ``state.json`` (step, extras). It is
written to ``checkpoint.tmp`` and renamed, so a stop at any moment leaves the previous one whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT = "checkpoint"


def save_checkpoint(run_dir: Path, step: int, modules: dict[str, torch.nn.Module],
                    optim_state: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    final = Path(run_dir) / CHECKPOINT
    tmp = final.with_name(CHECKPOINT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(tensors, tmp / f"{name}.safetensors")
    torch.save(optim_state, tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}, indent=2))
    old = final.with_name(CHECKPOINT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(run_dir: Path, modules: dict[str, torch.nn.Module]) -> tuple[int, dict, dict] | None:
    """Restore ``modules`` in place; return (step, optim_state, state) or None if no checkpoint."""
    folder = Path(run_dir) / CHECKPOINT
    if not (folder / "state.json").is_file():
        old = folder.with_name(CHECKPOINT + ".old")  # stopped between the two renames
        if not (old / "state.json").is_file():
            return None
        folder = old
    for name, module in modules.items():
        module.load_state_dict(load_file(folder / f"{name}.safetensors"))
    optim_state = torch.load(folder / "optim.pt", weights_only=True)
    state = json.loads((folder / "state.json").read_text())
    return int(state["step"]), optim_state, state
