"""How far to trust an annotator: its accuracy on labelled images, group by group.

A biased annotator fakes bias: one that reads dark skin as brown half the time makes any model
look like it under-draws dark skin. So before an audit's figures mean anything, the annotator is
checked on a labelled captioned dataset (``metadata.jsonl`` with ground-truth attribute columns,
:mod:`equigen.data.captioned`). Per attribute :func:`calibrate` reports

- ``accuracy``: share of answered (not abstained) images read correctly, with a 95% bootstrap
  interval: what the audit's distributions rest on, since they leave abstentions out;
- ``recall``: per true group, P(read as that group | the group), abstentions counted as misses;
  ``abstained_by_group``: per true group, the abstention rate;
- ``recall_gap``: max - min recall over the groups present, with a 95% bootstrap interval, and
  the two groups it lies between. A gap far from 0 means the annotator itself skews distributions;
- ``confusion``: counts, rows = true group, columns = read group, then one ``abstained`` column;
- ``abstention_rate`` and ``unmatched`` (label values that are none of the annotator's groups:
  those rows are left out and counted here, so a naming mismatch cannot pass unnoticed).

Label values are group names (matched exactly, else case-insensitively) or integer indices into
the annotator's group list (the mini-world's ``tone`` column holds such an index).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from equigen.audit.annotate import ABSTAINED, annotate
from equigen.audit.annotators import Annotator
from equigen.audit.metrics import bootstrap_interval
from equigen.audit.prompts import AttributeSpec
from equigen.data.captioned import load_records, resolve_in_root
from equigen.errors import EquigenError
from equigen.utils.console import make_progress

UNLABELLED = -2  # a row whose label is missing or not one of the annotator's groups


def _label_index(value: Any, groups: list[str], lookup: dict[str, int]) -> int | None:
    """Index of a label value in ``groups``; None when missing or not a group."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if 0 <= value < len(groups) else None
    if isinstance(value, str):
        if value in lookup:
            return lookup[value]
        return lookup.get(value.strip().casefold())
    return None


def _truth(records: list, attribute: str, groups: list[str]) -> tuple[np.ndarray, Counter]:
    lookup = {g: i for i, g in enumerate(groups)}
    lookup.update({g.casefold(): i for i, g in enumerate(groups) if g.casefold() not in lookup})
    truth, unmatched = [], Counter()
    for record in records:
        value = record.attributes.get(attribute)
        index = _label_index(value, groups, lookup)
        if index is None and value is not None:
            unmatched[str(value)] += 1
        truth.append(UNLABELLED if index is None else index)
    return np.array(truth, dtype=int), unmatched


def _recalls(pairs: np.ndarray, k: int) -> np.ndarray:
    """Per-group recall (NaN for a group with no images); pairs = [n, 2] (truth, read)."""
    out = np.full(k, np.nan)
    for g in range(k):
        mine = pairs[pairs[:, 0] == g]
        if len(mine):
            out[g] = float(np.mean(mine[:, 1] == g))
    return out


def _gap(pairs: np.ndarray, k: int) -> float:
    recalls = _recalls(pairs, k)
    present = recalls[~np.isnan(recalls)]
    return float(present.max() - present.min()) if len(present) > 1 else 0.0


def _accuracy(pairs: np.ndarray) -> float:
    answered = pairs[pairs[:, 1] != ABSTAINED]
    return float(np.mean(answered[:, 0] == answered[:, 1])) if len(answered) else float("nan")


def _rounded(values: Sequence[float]) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 5) for v in values]


def calibrate(
    annotator: Annotator,
    dataset_dir: str | Path,
    attributes: Sequence[str] | None = None,
    abstain_below: float | dict[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    limit: int | None = None,
) -> dict[str, Any]:
    """Read every image of a labelled dataset with ``annotator`` and compare with the labels.

    ``attributes``: which to check (default: every attribute the annotator reads that is a
    column of the dataset). ``abstain_below`` defaults to the annotator's own threshold.
    ``limit`` checks only the first ``limit`` rows. Returns ``{"dataset", "n_images",
    "abstain_below", "attributes": {attribute: figures}}`` (see the module docstring).
    """
    root = Path(dataset_dir)
    records = load_records(root)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise EquigenError(f"{root}: the dataset has no images")
    columns = sorted({key for r in records for key in r.attributes})
    if attributes is None:
        chosen = [a for a in annotator.groups if a in columns]
        if not chosen:
            raise EquigenError(f"{root}: no column of the dataset is an attribute the annotator "
                               f"reads (annotator: {', '.join(annotator.groups)}; dataset columns: "
                               f"{', '.join(columns) or 'none'})")
    else:
        chosen = list(attributes)
        for a in chosen:
            if a not in annotator.groups:
                raise EquigenError(f"attribute {a!r} is not read by the annotator "
                                   f"(it reads: {', '.join(annotator.groups)})")
            if a not in columns:
                raise EquigenError(f"{root}: no {a!r} column in metadata.jsonl "
                                   f"(columns: {', '.join(columns) or 'none'})")
    if abstain_below is None:
        abstain_below = getattr(annotator, "abstain_below", None)

    truths = {a: _truth(records, a, annotator.groups[a]) for a in chosen}
    for a, (truth, unmatched) in truths.items():
        if not (truth >= 0).any():
            raise EquigenError(f"{root}: no {a!r} label matches the annotator's groups "
                               f"{annotator.groups[a]} (labels seen: {sorted(unmatched)[:10]})")

    specs = {a: AttributeSpec(groups=annotator.groups[a]) for a in chosen}
    reads: dict[str, list[np.ndarray]] = {a: [] for a in chosen}
    with make_progress() as progress:
        task = progress.add_task("annotating", total=len(records))
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            images = [_open(root, r.file_name) for r in batch]
            for a, (labels, _) in annotate(annotator, images, specs, abstain_below,
                                           batch_size=batch_size).items():
                reads[a].append(labels)
            progress.advance(task, len(batch))

    out: dict[str, Any] = {}
    for i, a in enumerate(chosen):
        groups = annotator.groups[a]
        k = len(groups)
        truth, unmatched = truths[a]
        read = np.concatenate(reads[a])
        keep = truth >= 0
        pairs = np.stack([truth[keep], read[keep]], axis=1)
        confusion = np.zeros((k, k + 1), dtype=int)
        for t, r in pairs:
            confusion[t, k if r == ABSTAINED else r] += 1
        answered = pairs[pairs[:, 1] != ABSTAINED]
        boot = {"n_boot": n_boot, "seed": seed + i}
        accuracy = (bootstrap_interval(answered, _accuracy, **boot) if len(answered)
                    else (float("nan"),) * 3)
        recalls = _recalls(pairs, k)
        present = [g for g in range(k) if not np.isnan(recalls[g])]
        low = min(present, key=lambda g: recalls[g])
        high = max(present, key=lambda g: recalls[g])
        gap = bootstrap_interval(pairs, lambda p: _gap(p, k), **boot)
        per_group_n = confusion.sum(1)
        out[a] = {
            "groups": groups,
            "n": int(len(pairs)),
            "answered": int(len(answered)),
            "accuracy": _rounded(accuracy),
            "abstain_below": (abstain_below.get(a) if isinstance(abstain_below, dict)
                              else abstain_below),
            "abstention_rate": round(float(np.mean(pairs[:, 1] == ABSTAINED)), 5),
            "recall": dict(zip(groups, _rounded(recalls))),
            "abstained_by_group": dict(zip(groups, _rounded(
                [confusion[g, k] / per_group_n[g] if per_group_n[g] else np.nan for g in range(k)]))),
            "n_by_group": dict(zip(groups, per_group_n.tolist())),
            "recall_gap": _rounded(gap),
            "recall_gap_groups": [groups[low], groups[high]],
            "confusion": {"rows": groups, "columns": groups + ["abstained"],
                          "counts": confusion.tolist()},
            "unmatched": dict(unmatched.most_common()),
        }
    return {"dataset": str(root), "n_images": len(records), "abstain_below": abstain_below,
            "n_boot": n_boot, "attributes": out}


def _open(root: Path, relative: str) -> Image.Image:
    path = resolve_in_root(root, relative)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise EquigenError(f"{path}: cannot read the image ({exc})") from exc
