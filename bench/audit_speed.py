"""Audit throughput, and how much of an audit's time is spent outside the model.

    python bench/audit_speed.py                      # the shipped mini-world model
    python bench/audit_speed.py --model PATH --n 32

Baseline measured in the same run: the bare pipeline generating the same prompts, seeds and
batches (no saving, no annotation, no metrics). Overhead = (audit time - bare time) / audit time;
target <= 15%.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from equigen.audit.prompts import load_prompt_set, prompt_seed
from equigen.audit.run import AuditConfig, run_audit
from equigen.models import load_pipeline
from equigen.models.defaults import DEFAULT_STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini-world")
    parser.add_argument("--prompts", default="configs/prompts/mini-world-occupations.yaml")
    parser.add_argument("--n", type=int, default=32, help="images per prompt")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/audit_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    prompt_set = load_prompt_set(args.prompts)
    jobs = [(p.text, i) for p in prompt_set.prompts for i in range(args.n)]
    pipe = load_pipeline(args.model)
    pipe(jobs[0][0], num_inference_steps=2)  # warm-up
    start = time.perf_counter()
    for s in range(0, len(jobs), args.batch_size):
        batch = jobs[s : s + args.batch_size]
        pipe([t for t, _ in batch], num_inference_steps=args.steps, guidance_scale=4.0,
             generator=[torch.Generator().manual_seed(prompt_seed(0, t, i)) for t, i in batch])
    bare_s = time.perf_counter() - start
    del pipe

    folder = Path(tempfile.mkdtemp(prefix="audit-speed-"))
    try:
        start = time.perf_counter()
        run_audit(AuditConfig(model=args.model, prompts=Path(args.prompts), n=args.n,
                              batch_size=args.batch_size, steps=args.steps, out=folder))
        audit_s = time.perf_counter() - start
        stages = json.loads((folder / "manifest.json").read_text())["results"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    images = len(jobs)
    result = {
        "model": args.model, "images": images, "steps": args.steps, "batch_size": args.batch_size,
        "audit_images_per_s": images / audit_s, "bare_images_per_s": images / bare_s,
        "overhead_share": (audit_s - bare_s) / audit_s, "stages_s": stages,
    }
    print(f"audit: {result['audit_images_per_s']:.2f} images/s; bare pipeline (baseline, same "
          f"prompts/seeds/batches): {result['bare_images_per_s']:.2f} images/s; time outside the "
          f"model: {result['overhead_share']:.1%} (target <= 15%)")
    print("stages:", stages)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
