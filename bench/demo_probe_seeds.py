"""How much of the demo's StableRep-vs-SimCLR probe gap is the training seed? Same data, other seeds.

    make demo && python bench/demo_probe_seeds.py --seeds 1 2

Re-trains the demo's two short runs (StableRep on `runs/demo/synth`, SimCLR on `runs/demo/web`,
the demo's settings: 150 steps, 64 images a step, patch-16 depth-6 ViT) with other training
seeds and probes each on `runs/demo/probe`. Prints each seed's mean top-1 beside the demo's own
(seed 0) and writes bench/results/demo_probe_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from equigen.demo import DemoConfig, demo_training_config
from equigen.methods.stablerep.probe import ProbeConfig, run_probe
from equigen.methods.stablerep.train import train_stablerep

# the demo's runs at its default sizes: data folder, images per caption, captions per batch
RUNS = {"stablerep": ("synth", 4, 16), "simclr": ("web", 1, 32)}


def probe_accuracy(run: Path) -> float:
    return json.loads((run / "probe.json").read_text())["mean_test_accuracy"]


def train_and_probe(demo: Path, work: Path, method: str, seed: int) -> float:
    data, m, n = RUNS[method]
    run = work / f"{method}-seed{seed}"
    if not (run / "probe.json").is_file():
        train_stablerep(demo_training_config(method, demo / data, run, images_per_caption=m,
                                             captions_per_batch=n,
                                             steps=DemoConfig().stablerep_steps, seed=seed))
        run_probe(ProbeConfig(run=run, data=demo / "probe"))
    return probe_accuracy(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=None,
                        help="default: DEMO/probe-seeds, so `equigen demo --fresh` removes runs "
                             "trained on the previous demo's data along with that data")
    parser.add_argument("--out", type=Path, default=Path("bench/results/demo_probe_seeds.json"))
    args = parser.parse_args()
    args.work = args.work or args.demo / "probe-seeds"
    results = {method: {"0 (the demo's)": probe_accuracy(args.demo / method)} for method in RUNS}
    for seed in args.seeds:
        for method in RUNS:
            results[method][str(seed)] = train_and_probe(args.demo, args.work, method, seed)
            print(f"{method:9s} seed {seed}: {results[method][str(seed)]:.3f}", flush=True)
    for method, by_seed in results.items():
        values = list(by_seed.values())
        print(f"{method:9s} " + "  ".join(f"{v:.3f}" for v in values)
              + f"   mean {statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
