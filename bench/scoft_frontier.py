"""Memorization at equal authenticity: SCoFT vs L_LDM alone, paired, from runs of bench/scoft.py.

The issue's claim is "SCoFT has a lower memorization rate than L_LDM-only at equal or better
authentic rate". A longer run of either is both more authentic and copies more, so comparing them
at one length says little; this compares each SCoFT run with the L_LDM run of the nearest (not
lower) authentic rate, on the same work folder (same curated set, seeds, prompts):

    python bench/scoft.py --per-culture 16 --work runs/bench-scoft-16 --n 16 --memorization-draws 8 --variants ldm scoft
    python bench/scoft.py --per-culture 16 --work runs/bench-scoft-16 --n 16 --memorization-draws 8 --variants ldm --steps 1600
    python bench/scoft.py --per-culture 16 --work runs/bench-scoft-16 --n 16 --memorization-draws 8 --variants scoft --steps 400
    python bench/scoft_frontier.py --work runs/bench-scoft-16 --per-culture 16 --draws 8 \
        --ldm ldm-1600steps --scoft scoft-400steps scoft

Every run drew the same images from the same seeds (the audit's image i of a prompt, the k-th
generation of a training caption), so differences get paired bootstrap intervals: training
captions resampled with their draws (near-copies), images resampled within prompts (authentic).
Writes bench/results/scoft_frontier.json.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from equigen.audit.metrics import mean_over_prompts, paired_mean_change
from equigen.data.captioned import load_records
from equigen.methods.scoft.memorization import (
    caption_bootstrap,
    memorization_check,
    near_copy_threshold,
    pixel_features,
    world_rerender_similarities,
)

TARGET = ["Kethu", "Zuloa"]
N_BOOT = 2000


def authentic_hits(audit: Path) -> dict[str, np.ndarray]:
    """Prompt id -> 0/1 authentic per image (in seed order), for the target regions' prompts."""
    prompts = {p["id"]: p for p in json.loads((audit / "results.json").read_text())["prompts"]}
    rows = defaultdict(list)
    with (audit / "annotations.csv").open() as handle:
        for row in csv.DictReader(handle):
            if prompts[row["prompt_id"]]["slots"].get("region") in TARGET:
                rows[row["prompt_id"]].append(row)
    return {pid: np.array([r["style"] == "authentic"
                           for r in sorted(v, key=lambda r: int(r["index"]))], float)
            for pid, v in sorted(rows.items())}


def copy_flags(folder: Path, curated: np.ndarray, threshold: float, captions: int,
               draws: int) -> np.ndarray:
    """(captions, draws) near-copy flags of a run's generations for its training captions."""
    paths = [folder / f"{i:05d}.png" for i in range(captions * draws)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} missing: run bench/scoft.py with "
                                f"--memorization-draws {draws} for this variant first")
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    flags = memorization_check(pixel_features(images), curated, threshold).flagged
    return flags.reshape(captions, draws).astype(float)


def share_with_interval(values) -> list[float]:
    return [round(100 * float(v), 1) for v in values]


def authentic_interval(hits: dict[str, np.ndarray],
                       other: dict[str, np.ndarray] | None) -> list[float]:
    """Mean over prompts of the share authentic (or its paired change from ``other``), in %."""
    pids = sorted(hits)
    if other is None:
        return share_with_interval(mean_over_prompts([hits[p].astype(int) for p in pids], 2,
                                                     lambda p, _: float(p[1]), n_boot=N_BOOT))
    return share_with_interval(paired_mean_change([hits[p] for p in pids],
                                                  [other[p] for p in pids], n_boot=N_BOOT))


def copies_interval(flags: np.ndarray, other: np.ndarray | None) -> list[float]:
    """Share of near-copies (or its change from ``other``), captions resampled with their draws."""
    diff = flags - (other if other is not None else 0)
    return share_with_interval(caption_bootstrap(diff, N_BOOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--per-culture", type=int, default=None)
    parser.add_argument("--draws", type=int, default=8, help="--memorization-draws of the runs")
    parser.add_argument("--ldm", nargs="+", required=True, help="L_LDM-only run folders")
    parser.add_argument("--scoft", nargs="+", required=True, help="SCoFT run folders")
    parser.add_argument("--out", type=Path, default=Path("bench/results/scoft_frontier.json"))
    args = parser.parse_args()

    curated_dir = args.work / (f"curated-{args.per_culture}" if args.per_culture else "curated")
    records = [r for r in load_records(curated_dir) if r.culture in TARGET]
    curated = pixel_features(np.stack([np.asarray(Image.open(curated_dir / r.file_name).convert("RGB"))
                                       for r in records]))
    threshold = near_copy_threshold(world_rerender_similarities(records, pixel_features, curated))
    folder = "training-captions" if args.draws == 1 else f"training-captions-x{args.draws}"

    runs = {}
    for name in args.ldm + args.scoft:
        run = args.work / name
        scoped = run / "audit-cultures-scoped"  # the target prompts' images are the same either way
        audit = scoped if scoped.is_dir() else run / "audit-cultures"
        runs[name] = {"authentic": authentic_hits(audit),
                      "copies": copy_flags(run / folder, curated, threshold, len(records), args.draws)}
    table = {name: {"authentic": authentic_interval(r["authentic"], None),
                    "near_copies": copies_interval(r["copies"], None)}
             for name, r in runs.items()}
    for name, row in table.items():
        print(f"{name:16s} authentic {row['authentic']}  near-copies {row['near_copies']} (%)")

    pairs = {}
    for scoft in args.scoft:
        # the L_LDM run at least as authentic as this SCoFT run, the nearest such; else the most
        # authentic one (then the comparison favours L_LDM)
        by_auth = sorted(args.ldm, key=lambda n: table[n]["authentic"][0])
        match = next((n for n in by_auth if table[n]["authentic"][0] >= table[scoft]["authentic"][0]),
                     by_auth[-1])
        pairs[f"{scoft} - {match}"] = {
            "authentic": authentic_interval(runs[scoft]["authentic"], runs[match]["authentic"]),
            "near_copies": copies_interval(runs[scoft]["copies"], runs[match]["copies"])}
        print(f"{scoft} - {match}: authentic {pairs[f'{scoft} - {match}']['authentic']}  "
              f"near-copies {pairs[f'{scoft} - {match}']['near_copies']} (points, paired 95%)")

    report = {"date": str(date.today()), "args": {k: str(v) for k, v in vars(args).items()},
              "near_copy_threshold": threshold, "captions": len(records), "runs": table,
              "scoft_minus_matched_ldm": pairs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
