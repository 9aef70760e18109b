"""Does the sampler change the bias an audit reports? Neutral-prompt tone per occupation, per sampler.

    python bench/samplers.py --samplers dpm++2m euler-a --guidance 1.1      # ~12 min on 2 cores
    python bench/samplers.py --samplers dpm++2m ddpm --steps 100 --occupations teacher chef

The same model, prompts ("a photo of a teacher"), seeds and guidance; only the sampler differs.
For each occupation: the tone shares the oracle reads, their TV to the `web` corpus (95% CI) and,
as the baseline measured in the same run, the first sampler's figures. A perfect model would give
the same distribution under every sampler; how far they differ is how much of an audited bias is
the sampler's. Writes bench/results/samplers.json.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import torch

from equigen.models import load_pipeline
from equigen.models.defaults import DEFAULT_STEPS
from equigen.models.loading import SAMPLERS, set_sampler
from equigen.world.oracle import OracleAnnotator
from equigen.world.scene import load_world
from world_quality import tone_bias  # bench/ is the script's folder, so on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini-world")
    parser.add_argument("--samplers", nargs="+", choices=list(SAMPLERS), default=["dpm++2m", "euler-a"])
    parser.add_argument("--occupations", nargs="+", choices=load_world().occupations, default=None,
                        help="default: all")
    parser.add_argument("--guidance", type=float, default=1.1)
    parser.add_argument("--n", type=int, default=200, help="images per occupation and sampler")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/samplers.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    oracle, pipe = OracleAnnotator.load(None), load_pipeline(args.model)
    results = {"model": args.model, "date": date.today().isoformat(), "guidance": args.guidance,
               "steps": args.steps, "n": args.n, "samplers": {}}  # in the order compared
    for sampler in args.samplers:
        set_sampler(pipe, sampler)
        started = time.perf_counter()
        bias, _ = tone_bias(pipe, oracle, args, args.guidance, args.n, occupations=args.occupations)
        results["samplers"][sampler] = {"seconds": round(time.perf_counter() - started, 1),
                                        "tone_bias": bias}
        for occupation, v in bias.items():
            low, high = v["tv_to_web"][1], v["tv_to_web"][2]
            print(f"{sampler:8s} {occupation:8s} generated {v['generated']} web {v['web']} "
                  f"TV {v['tv_to_web'][0]:.3f} [{low:.3f}, {high:.3f}] "
                  f"(a perfect model {v['tv_of_perfect_model']:.3f})", flush=True)
    baseline = results["samplers"][args.samplers[0]]["tone_bias"]
    for sampler in args.samplers[1:]:
        other = results["samplers"][sampler]["tone_bias"]
        print(f"TV to web, {sampler} vs {args.samplers[0]}: " + ", ".join(
            f"{o} {other[o]['tv_to_web'][0]:.3f} vs {baseline[o]['tv_to_web'][0]:.3f}" for o in baseline))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
