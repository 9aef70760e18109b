"""Does Fair Mapping debias the mini-world without costing fidelity, fast? Base vs map, same seeds.

    python bench/fairmap.py                                   # configs/fairmap/mini-world.yaml
    python bench/fairmap.py --set fair_weight=3 --work runs/bench-fairmap-l3
    python bench/fairmap.py --sets heldout --out bench/results/x.json   # the headline only

Trains the map (timed), then audits the base model and the mapped model on the same prompts and
seeds: held-out occupations (tone FD, the headline), the trained occupations, prompts naming
region/occupation/setting (fidelity), prompts naming a tone (the keyword path). Every change has
a 95% bootstrap interval (images resampled per prompt). FID of each against the same renders, and
the map's cost in generation time, measured interleaved in this run. Writes
bench/results/fairmap.json.
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
from PIL import Image

from equigen.audit.annotators import images_to_tensor
from equigen.audit.quality import fid_kid
from equigen.audit.report import compare_runs, load_run
from equigen.audit.run import AuditConfig, image_path, run_audit
from equigen.config import load_config
from equigen.methods.fairmap import FairMapConfig, FairMapping, train_fairmap
from equigen.models import load_pipeline
from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE
from equigen.models.generate import generate_images
from equigen.world.distributions import sample_rows
from equigen.world.oracle import OracleAnnotator
from equigen.world.render import render_rows

PROMPT_SETS = {  # name -> (prompt set, images per prompt flag)
    "heldout": ("configs/prompts/mini-world-heldout-occupations.yaml", "n_heldout"),
    "occupations": ("configs/prompts/mini-world-occupations.yaml", "n_occupations"),
    "fidelity": ("configs/prompts/mini-world-fidelity.yaml", "n_fidelity"),
    "named": ("configs/prompts/mini-world-named.yaml", "n_named"),
}


def interval(c) -> dict:
    return {"base": c.values[0], "fairmap": c.values[1], "change": c.deltas[0]}


def compare(work: Path, name: str) -> dict:
    cmp_ = compare_runs([load_run(work / "base" / name), load_run(work / "fairmap" / name)])
    return {"fairness": {a: {m: interval(c) for m, c in block.items() if m in ("fd", "kl")}
                         for a, block in cmp_.fairness.items()},
            "alignment": {a: interval(c) for a, c in cmp_.alignment.items()}}


def fid_against_renders(work: Path, n: int) -> dict:
    """FID with the oracle's features of each run's neutral-occupation images against the same
    web renders and balanced renders (the map moves tone toward uniform, away from web)."""
    oracle = OracleAnnotator.load()
    out = {}
    references = {name: [Image.fromarray(a) for a in render_rows(sample_rows(name, n, seed=777))]
                  for name in ("web", "balanced")}
    for run in ("base", "fairmap"):
        folder = work / run / "occupations"
        files = sorted((folder / "images").rglob("*.png"))[:n]
        fake = images_to_tensor([Image.open(f).convert("RGB") for f in files])
        for ref_name, ref in references.items():
            out.setdefault(ref_name, {})[run] = fid_kid(images_to_tensor(ref), fake,
                                                        oracle.net.features)["fid"]
    for ref_name in references:
        out[ref_name]["ratio"] = out[ref_name]["fairmap"] / out[ref_name]["base"]
    out["n"] = min(n, len(files))
    return out


def generation_overhead(mapping: FairMapping, repeats: int, count: int) -> dict:
    pipe = load_pipeline("mini-world")
    prompts = ["a photo of a teacher", "a photo of a builder"] * (count // 2)
    seeds = list(range(count))
    timings: dict[str, list[float]] = {"base": [], "fairmap": []}
    generate_images(pipe, prompts[:8], seeds[:8], batch_size=8)  # warm-up
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        for name, encoder in (("base", None), ("fairmap", mapping.encode)):
            start = time.perf_counter()
            generate_images(pipe, prompts, seeds, batch_size=16, prompt_encoder=encoder)
            timings[name].append(time.perf_counter() - start)
    base, mapped = statistics.median(timings["base"]), statistics.median(timings["fairmap"])
    return {"base_s": base, "fairmap_s": mapped, "overhead": mapped / base - 1,
            "images": count, "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/fairmap/mini-world.yaml")
    parser.add_argument("--set", action="append", default=[], help="override a map config key")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-fairmap"))
    parser.add_argument("--n-heldout", type=int, default=100)
    parser.add_argument("--n-occupations", type=int, default=60)
    parser.add_argument("--n-fidelity", type=int, default=8)
    parser.add_argument("--n-named", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE_SCALE)
    parser.add_argument("--sets", nargs="+", choices=list(PROMPT_SETS), default=list(PROMPT_SETS),
                        help="prompt sets to audit (FID needs 'occupations'; default: all, and "
                             "the generation-time overhead)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/fairmap.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    cfg = load_config(FairMapConfig, args.config, args.set, values={"out": str(args.work / "map")})
    start = time.perf_counter()
    reuse = (cfg.out / "fairmap.json").is_file() and FairMapping.load(cfg.out).info.get(
        "config") == cfg.model_dump(mode="json")
    mapping = FairMapping.load(cfg.out) if reuse else train_fairmap(cfg)
    train = dict(mapping.info["training"])  # measured when the map was trained
    if not reuse:
        train["wall_s_with_model_load"] = round(time.perf_counter() - start, 1)
    results: dict = {"date": date.today().isoformat(),
                     "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                     "config": cfg.model_dump(mode="json"), "map_reused": reuse, "train": train}
    print("training:", results["train"])

    for name in args.sets:
        prompts, n_flag = PROMPT_SETS[name]
        for run, fairmap in (("base", None), ("fairmap", cfg.out)):
            run_audit(AuditConfig(prompts=Path(prompts), n=getattr(args, n_flag), fairmap=fairmap,
                                  guidance_scale=args.guidance, out=args.work / run / name))
        results[name] = compare(args.work, name)
        print(name, json.dumps(results[name]))
    if "occupations" in args.sets:
        results["fid"] = fid_against_renders(args.work, 300)
        print("FID (oracle features):", results["fid"])
    if set(args.sets) == set(PROMPT_SETS):
        results["generation_overhead"] = generation_overhead(mapping, repeats=3, count=32)
        print("generation overhead:", results["generation_overhead"])
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
