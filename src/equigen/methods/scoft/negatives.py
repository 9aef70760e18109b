"""``equigen scoft negatives``: the base model's own drawings of each curated caption.

SCoFT's contrastive term pushes the fine-tuned model away from what the base model draws for the
same caption (its stereotypes). For every row of a curated dataset this generates k images of
its caption with the *base* model, each with its own seed (so any one can be regenerated), saves
them inside the dataset (``negatives/<row>_<j>.png``) and lists them in the row's ``negatives``
column. Resumable: images already on disk are not generated again; a folder's negatives are never
mixed across generator settings (recorded in ``negatives/settings.json``).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Optional

from pydantic import Field

from equigen.config import StrictModel
from equigen.data.captioned import load_records, write_records
from equigen.errors import EquigenError
from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE
from equigen.utils.console import info, make_progress
from equigen.utils.io import atomic_path, write_json_atomic

FOLDER = "negatives"
SETTINGS = "settings.json"


class NegativesConfig(StrictModel):
    dataset: Path
    model: str = "mini-world"
    k: int = Field(4, ge=1)  # negatives per caption
    cultures: Optional[list[str]] = None  # only rows of these cultures (default: every row)
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    steps: int = Field(25, ge=1)
    seed: int = 0
    batch_size: int = Field(16, ge=1)
    device: Optional[str] = None

    def settings(self) -> dict:
        return {key: getattr(self, key) for key in ("model", "k", "guidance_scale", "steps", "seed")}


def negative_path(row: int, j: int) -> str:
    return str(PurePosixPath(FOLDER) / f"{row:05d}_{j}.png")


def _check_settings(cfg: NegativesConfig) -> None:
    path = cfg.dataset / FOLDER / SETTINGS
    if path.is_file():
        before = json.loads(path.read_text())
        if before != cfg.settings():
            changed = ", ".join(f"{k} was {before.get(k)!r}, now {v!r}"
                                for k, v in cfg.settings().items() if before.get(k) != v)
            raise EquigenError(f"{path}: the negatives here were made with other settings "
                               f"({changed}); delete {cfg.dataset / FOLDER} to remake them")
    write_json_atomic(path, cfg.settings())


def make_negatives(cfg: NegativesConfig, allow_download: bool = False) -> int:
    """Generate every missing negative and update metadata.jsonl; return how many were made."""
    from equigen.models.generate import generate_images, image_seed

    records = load_records(cfg.dataset)
    if not records:
        raise EquigenError(f"{cfg.dataset}: the dataset has no rows")
    _check_settings(cfg)
    chosen = [r for r, record in enumerate(records)
              if cfg.cultures is None or record.culture in cfg.cultures]
    if not chosen:
        raise EquigenError(f"{cfg.dataset}: no rows of cultures {cfg.cultures}; present: "
                           f"{sorted({str(r.culture) for r in records})}")
    jobs = [(r, j) for r in chosen for j in range(cfg.k)
            if not (cfg.dataset / negative_path(r, j)).is_file()]
    if jobs:
        from equigen.models import load_pipeline

        pipe = load_pipeline(cfg.model, device=cfg.device, allow_download=allow_download)
        with make_progress() as progress:
            task = progress.add_task("negatives", total=len(jobs))
            for start in range(0, len(jobs), cfg.batch_size):
                batch = jobs[start : start + cfg.batch_size]
                images = generate_images(pipe, [records[r].text for r, _ in batch],
                                         [image_seed(cfg.seed, r, j) for r, j in batch],
                                         guidance_scale=cfg.guidance_scale, steps=cfg.steps,
                                         batch_size=len(batch))
                for (r, j), image in zip(batch, images):
                    with atomic_path(cfg.dataset / negative_path(r, j)) as tmp:
                        image.save(tmp, format="PNG")
                progress.advance(task, len(batch))
    for r in chosen:
        records[r].negatives = [negative_path(r, j) for j in range(cfg.k)]
    write_records(cfg.dataset, records)
    info(f"{len(jobs)} negatives generated, {len(chosen) * cfg.k - len(jobs)} already there; "
         f"listed in {cfg.dataset / 'metadata.jsonl'}")
    return len(jobs)
