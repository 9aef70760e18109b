"""The StableRep paper's comparison on the mini-world, and whether a debiased generator debiases
the representation. Same backbone, steps and images per step for every method.

    python bench/stablerep_compare.py                        # defaults below (~1.5 h on 1 core)
    python bench/stablerep_compare.py --captions 60 --m 4 --train-steps 20 --seeds 0   # smoke run

1. `web` renders (the "real" scraped images) and their first N distinct captions.
2. Synthetic: m images per caption from the base model at each guidance w, and at the main w
   with the Fair Mapping (runs/bench-fairmap/map, from bench/fairmap.py) applied.
3. Train, per seed: StableRep and StableRep+ on the synthetic images (main w); SimCLR and CLIP on
   N x m real `web` images (the same number of images); StableRep on the Fair-Mapped images;
   StableRep at every other w (first seed only: the guidance curve).
4. Linear probes (region, occupation, setting) on the mini-world `probe` split; per-tone gap.

Every stage is resumable (synth shards, training checkpoints, cached probe features): a stopped
run continues. Writes bench/results/stablerep_compare.json and prints the table.
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
from equigen.data.captioned import load_records
from equigen.data.synth import SynthConfig, run_synth
from equigen.methods.stablerep.probe import ProbeConfig, run_probe
from equigen.methods.stablerep.train import StableRepConfig, train_stablerep
from equigen.world.export import export_distribution

LABELS = ["region", "occupation", "setting"]


def distinct_captions(web: Path, n: int) -> list[str]:
    seen: dict[str, None] = {}
    for record in load_records(web):
        seen.setdefault(record.text, None)
        if len(seen) == n:
            break
    if len(seen) < n:
        raise SystemExit(f"{web} has only {len(seen)} distinct captions; export more rows")
    return list(seen)


def synth(work: Path, captions_file: Path, args, guidance: float, fairmap: Path | None) -> Path:
    name = f"synth-w{guidance:g}" + ("-fairmap" if fairmap else "")
    cfg = SynthConfig(captions=captions_file, m=args.m, guidance_scale=guidance,
                      steps=args.gen_steps, fairmap=fairmap, out=work / name,
                      batch_size=48, captions_per_shard=50)
    started = time.perf_counter()
    run_synth(cfg, rank=0, world_size=1)
    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return cfg.out


def train_and_probe(work: Path, name: str, data: Path, method: str, seed: int, args,
                    probe_data: Path) -> dict:
    base = load_config(StableRepConfig, Path("configs/stablerep/mini-world.yaml"),
                       values={"data": data, "out": work / "runs" / name})
    images_per_step = args.images_per_step
    m = 1 if method in ("simclr", "clip") else args.m_per_batch
    views = 2 if method == "simclr" else 1
    cfg = base.model_copy(update={
        "method": method, "seed": seed, "steps": args.train_steps,
        "warmup_steps": max(1, args.train_steps // 20), "checkpoint_every": 100,
        "images_per_caption": max(m, 1), "captions_per_batch": images_per_step // (m * views),
        "arch": base.arch.model_copy(update={"patch_size": args.patch,
                                             "backbone_args": {"depth": args.depth}})})
    cfg = StableRepConfig.model_validate(cfg.model_dump())
    summary_path = cfg.out / "probe.json"
    if not summary_path.is_file():
        started = time.perf_counter()
        train_stablerep(cfg)
        print(f"{name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
        run_probe(ProbeConfig(run=cfg.out, data=probe_data, labels=LABELS))
    probe = json.loads(summary_path.read_text())
    row = {label: probe[label]["test_accuracy"] for label in LABELS}
    row["mean"] = probe["mean_test_accuracy"]
    row["tone_gap"] = statistics.mean(probe[label]["group_gap"] for label in LABELS)
    row["by_tone"] = {t: statistics.mean(probe[label]["by_tone"][t] for label in LABELS)
                      for t in probe[LABELS[0]]["by_tone"]}
    print(f"{name}: mean probe {row['mean']:.3f} (tone gap {row['tone_gap']:.3f})", flush=True)
    return row


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in ["mean", *LABELS, "tone_gap"]:
        values = [r[key] for r in rows]
        out[key] = {"mean": statistics.mean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-stablerep"))
    parser.add_argument("--captions", type=int, default=200, help="N distinct captions")
    parser.add_argument("--m", type=int, default=5, help="synthetic images per caption")
    parser.add_argument("--m-per-batch", type=int, default=4, help="images per caption per batch")
    parser.add_argument("--images-per-step", type=int, default=128)
    parser.add_argument("--gen-steps", type=int, default=15, help="DPM-Solver steps")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--patch", type=int, default=16, help="ViT patch (64 px / 16: 4 x 4 tokens)")
    parser.add_argument("--depth", type=int, default=6, help="ViT blocks (ViT-Tiny width)")
    parser.add_argument("--guidances", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--main-guidance", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fairmap", type=Path, default=Path("runs/bench-fairmap/map"))
    parser.add_argument("--probe-n", type=int, default=None, help="probe rows (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work
    started = time.perf_counter()

    n_real = args.captions * args.m
    web = export_distribution("web", work / "web", n=n_real, seed=0)  # the real images
    probe_data = export_distribution("probe", work / "probe", n=args.probe_n, seed=0)
    captions = distinct_captions(web, args.captions)
    captions_file = work / "captions.txt"
    captions_file.write_text("\n".join(captions) + "\n")

    synthetic = {w: synth(work, captions_file, args, w, None) for w in args.guidances}
    fair = synth(work, captions_file, args, args.main_guidance, args.fairmap) \
        if args.fairmap.exists() else None

    w0 = args.main_guidance
    plan: dict[str, list[tuple[str, Path, str, int]]] = {
        f"stablerep (synthetic, w={w0:g})": [(f"stablerep-w{w0:g}-s{s}", synthetic[w0], "stablerep", s)
                                            for s in args.seeds],
        f"stablerep+ (synthetic, w={w0:g})": [(f"stablerep_plus-w{w0:g}-s{s}", synthetic[w0],
                                              "stablerep_plus", s) for s in args.seeds],
        "simclr (real web)": [(f"simclr-real-s{s}", web, "simclr", s) for s in args.seeds],
        "clip (real web)": [(f"clip-real-s{s}", web, "clip", s) for s in args.seeds],
    }
    if fair is not None:
        plan[f"stablerep (Fair-Mapped synthetic, w={w0:g})"] = [
            (f"stablerep-fairmap-w{w0:g}-s{s}", fair, "stablerep", s) for s in args.seeds]
    for w in args.guidances:
        if w != w0:
            plan[f"stablerep (synthetic, w={w:g})"] = [
                (f"stablerep-w{w:g}-s{args.seeds[0]}", synthetic[w], "stablerep", args.seeds[0])]

    results = {}
    for label, runs in plan.items():
        rows = [train_and_probe(work, name, data, method, seed, args, probe_data)
                for name, data, method, seed in runs]
        results[label] = {**summarise(rows), "by_tone": [r["by_tone"] for r in rows]}

    report = {"date": str(date.today()), "machine": f"{platform.machine()}, "
              f"{torch.get_num_threads()} threads", "args": {k: str(v) for k, v in vars(args).items()},
              "real_images": n_real, "synthetic_images": args.captions * args.m,
              "seconds": round(time.perf_counter() - started), "results": results}
    out = Path("bench/results/stablerep_compare.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'method':44s} {'mean':>13s} " + " ".join(f"{l:>9s}" for l in LABELS) + "  tone gap")
    for label, r in results.items():
        print(f"{label:44s} {r['mean']['mean']:.3f}±{r['mean']['sd']:.3f}  "
              + " ".join(f"{r[l]['mean']:9.3f}" for l in LABELS) + f"  {r['tone_gap']['mean']:.3f}")
    print(f"written {out}")


if __name__ == "__main__":
    main()
