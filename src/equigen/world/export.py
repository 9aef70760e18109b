"""Write a mini-world distribution to disk as a captioned dataset (images + metadata.jsonl).

Resumable: each image is written under a temporary name and renamed into place, so an image that
exists is complete and is skipped on the next run. A small ``.world-export.json`` records the
export's parameters; resuming into a folder made with other parameters is an error rather than a
silent mix of two datasets. ``metadata.jsonl`` is written last, so a folder that has one is whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from equigen.data.captioned import CaptionRecord, write_records
from equigen.errors import EquigenError
from equigen.utils.io import atomic_path, write_json_atomic
from equigen.world.distributions import sample_rows
from equigen.world.render import render
from equigen.world.scene import WORLD_YAML, Scene, load_world

EXPORT_INFO = ".world-export.json"


def export_distribution(
    name: str,
    out_dir: str | Path,
    n: int | None = None,
    seed: int = 0,
    size: int = 64,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Render distribution ``name`` into ``out_dir``; returns ``out_dir``.

    ``on_progress(done)`` is called after each row with the number of rows done so far
    (skipped images count as done).
    """
    out = Path(out_dir)
    world = load_world()
    rows = sample_rows(name, n, seed, world)
    params = {"distribution": name, "n": len(rows), "seed": seed, "size": size,
              "world_sha256": _world_digest()}
    _claim_folder(out, params)
    for done, row in enumerate(rows, start=1):
        path = out / row["file_name"]
        if not path.exists():
            image = render(_scene_of(row), row["seed"], size)
            with atomic_path(path) as tmp:
                image.save(tmp, format="PNG")
        if on_progress is not None:
            on_progress(done)
    records: list[CaptionRecord | dict[str, Any]] = list(rows)
    write_records(out, records)
    return out


def _world_digest() -> str:
    """A short digest of world.yaml: a changed world invalidates images already on disk."""
    return hashlib.sha256(WORLD_YAML.read_bytes()).hexdigest()[:16]


def _scene_of(row: dict[str, Any]) -> Scene:
    return Scene(tone=row["tone"], region=row["region"], occupation=row["occupation"],
                 setting=row["setting"], style=row["style"])


def _claim_folder(out: Path, params: dict[str, Any]) -> None:
    """Record the export's parameters, or check they match a previous (interrupted) run's."""
    info = out / EXPORT_INFO
    if info.is_file():
        previous = json.loads(info.read_text(encoding="utf-8"))
        if previous != params:
            raise EquigenError(
                f"{out} holds a mini-world export made with {previous}, not {params}; "
                "use an empty folder (existing images would be reused otherwise)"
            )
        return
    if (out / "images").is_dir() and any((out / "images").iterdir()):
        raise EquigenError(f"{out}/images is not empty and was not made by export_distribution; "
                           "use an empty folder")
    write_json_atomic(info, params)
