"""Training data as *caption groups*: every caption with the images that show it.

Synthetic data (``equigen synth`` shards) has m images per caption; real data (a captioned
dataset folder) has one image per caption. A step samples n captions and m images of each
(StableRep), or one image seen twice under different augmentations (SimCLR), or one image with
its caption (CLIP). The groups are held in memory as uint8 arrays: enough for the mini-world
and for probes; streaming from the shards is the way for millions of images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from equigen.errors import EquigenError


@dataclass
class CaptionGroups:
    captions: list[str]
    images: list[np.ndarray]  # per caption: (k, H, W, 3) uint8

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def total_images(self) -> int:
        return sum(len(g) for g in self.images)


def _to_array(image: Image.Image, size: int) -> np.ndarray:
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return np.array(image, dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)


def groups_from_shards(folder: str | Path, size: int) -> CaptionGroups:
    """Read every complete shard in ``folder`` (from ``equigen synth``), grouped by caption id."""
    from equigen.data.shards import list_shards, open_shards

    if not list_shards(folder):
        raise EquigenError(f"{folder}: no .tar shards (make them with 'equigen synth')")
    by_caption: dict[int, tuple[str, list[tuple[int, np.ndarray]]]] = {}
    for sample in open_shards(folder, empty_check=False):
        meta = sample["json"]
        caption_id = int(meta["caption_id"])
        entry = by_caption.setdefault(caption_id, (meta["caption"], []))
        entry[1].append((int(meta["image_index"]), _to_array(sample["png"], size)))
    ids = sorted(by_caption)
    return CaptionGroups([by_caption[i][0] for i in ids],
                         [np.stack([a for _, a in sorted(by_caption[i][1], key=lambda t: t[0])])
                          for i in ids])


def groups_from_captioned(folder: str | Path, size: int, limit: int | None = None) -> CaptionGroups:
    """A captioned dataset folder (metadata.jsonl): one group per image."""
    from equigen.data.captioned import load_records, resolve_in_root

    root = Path(folder)
    records = load_records(root)[:limit]
    return CaptionGroups([r.text for r in records],
                         [_to_array(Image.open(resolve_in_root(root, r.file_name)), size)[None]
                          for r in records])


def load_groups(folder: str | Path, size: int, limit: int | None = None) -> CaptionGroups:
    folder = Path(folder)
    if any(folder.glob("shard-*.tar")):
        groups = groups_from_shards(folder, size)
        if limit is not None:
            groups = CaptionGroups(groups.captions[:limit], groups.images[:limit])
        return groups
    if (folder / "metadata.jsonl").is_file():
        return groups_from_captioned(folder, size, limit)
    raise EquigenError(f"{folder}: neither synth shards (*.tar) nor a captioned dataset "
                       f"(metadata.jsonl)")


class GroupSampler:
    """Batches of (image indices into a group, caption index): n captions x m images each.

    Captions are drawn without replacement within an epoch (reshuffled each epoch); images
    within a caption without replacement (all of them if it has fewer than m)."""

    def __init__(self, groups: CaptionGroups, n: int, m: int, generator: torch.Generator):
        if n > len(groups):
            raise EquigenError(f"{n} captions per batch but the data has only {len(groups)}")
        self.groups, self.n, self.m, self.generator = groups, n, m, generator
        self._order = torch.empty(0, dtype=torch.long)

    def next_batch(self) -> list[tuple[int, list[int]]]:
        if len(self._order) < self.n:
            self._order = torch.randperm(len(self.groups), generator=self.generator)
        chosen, self._order = self._order[: self.n], self._order[self.n :]
        batch = []
        for c in chosen.tolist():
            k = len(self.groups.images[c])
            picks = torch.randperm(k, generator=self.generator)[: self.m].tolist()
            batch.append((c, picks))
        return batch

    def state(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state(), "order": self._order.clone()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self._order = state["order"].clone()

