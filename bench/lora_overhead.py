"""What a SCoFT LoRA costs at generation time: fused (applied everywhere) vs scoped (unfused).

    python bench/lora_overhead.py --lora runs/bench-scoft-r3/scoft-2400steps/lora

A LoRA without a scope is fused into the weights: no extra work per step. A scoped LoRA stays
unfused so that it can be switched off for the prompts outside its scope; the prompts inside pay
the LoRA's extra matmuls, and a batch that mixes both is drawn as two smaller batches. Times 32
images (batch 16, 25 steps) per case, interleaved over the repeats so that drift in machine load
hits every case alike; the figure is each case's median over the base model's median, same run.
Writes bench/results/lora_overhead.json.
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

from equigen.models import load_pipeline
from equigen.models.generate import generate_images
from equigen.models.loading import apply_lora

IN_SCOPE = ["a photo of a person from Kethu", "a Zuloa street", "a photo of a doctor from Kethu",
            "a Zuloan market"]
OUT_OF_SCOPE = ["a photo of a doctor", "an Avel street", "a photo of a teacher from Borenza",
                "a Miravan market"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lora", type=Path, required=True,
                        help="a LoRA folder written by `equigen scoft train` (with its scope)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/lora_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base, fused, scoped = (load_pipeline("mini-world") for _ in range(3))
    if apply_lora(fused, args.lora, everywhere=True) is not None:
        raise SystemExit("expected the LoRA fused")
    scope = apply_lora(scoped, args.lora)
    if scope is None:
        raise SystemExit(f"{args.lora} has no scope file: train it with `equigen scoft train`")

    def prompts(pool: list[str]) -> list[str]:
        return [pool[i % len(pool)] for i in range(args.images)]

    mixed = [p for pair in zip(prompts(IN_SCOPE), prompts(OUT_OF_SCOPE)) for p in pair]
    cases = {  # name -> (pipeline, prompts, scope)
        "base, in-scope prompts": (base, prompts(IN_SCOPE), None),
        "fused LoRA, in-scope prompts": (fused, prompts(IN_SCOPE), None),
        "scoped LoRA, in-scope prompts": (scoped, prompts(IN_SCOPE), scope),
        "scoped LoRA, out-of-scope prompts": (scoped, prompts(OUT_OF_SCOPE), scope),
        "scoped LoRA, mixed batches": (scoped, mixed[:args.images], scope),
    }
    seeds = list(range(args.images))
    for pipe, batch, case_scope in cases.values():  # warm-up
        generate_images(pipe, batch[:8], seeds[:8], batch_size=8, lora_scope=case_scope)
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, (pipe, batch, case_scope) in cases.items():
            start = time.perf_counter()
            generate_images(pipe, batch, seeds, batch_size=16, lora_scope=case_scope,
                            description=name)
            timings[name].append(time.perf_counter() - start)

    baseline = statistics.median(timings["base, in-scope prompts"])
    results = {"date": date.today().isoformat(),
               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
               "lora": str(args.lora), "scope": scope.words, "images": args.images,
               "repeats": args.repeats, "batch_size": 16,
               "cases": {name: {"median_s": round(statistics.median(t), 3),
                                "vs_base": round(statistics.median(t) / baseline, 3),
                                "all_s": [round(x, 3) for x in t]}
                         for name, t in timings.items()}}
    for name, case in results["cases"].items():
        print(f"{name:36s} {case['median_s']:7.2f} s   x{case['vs_base']:.3f} the base model")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
