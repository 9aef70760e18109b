"""SCoFT training speed and memory on the mini-world, each case in a fresh process.

    python bench/scoft_speed.py                 # needs runs/bench-scoft/curated (bench/scoft.py)

- time per training sample of an L_LDM(+L_M) step and of an L_C(+L_P) step (20-step rollout);
- the peak memory an L_C step adds over the loaded model, with and without gradient checkpointing
  (CUDA: max allocated; CPU: growth of the process's peak RSS);
- the speed-up per sample of batch 8 over batch 1 (L_LDM steps).
Writes bench/results/scoft_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path


def measure(data: str, batch: int, rollout: bool, checkpointing: bool, repeats: int) -> dict:
    import torch

    from equigen.methods.scoft.train import ScoftConfig, build_scoft, step_generator

    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "2")))
    cfg = ScoftConfig(data=data, cultures=["Kethu", "Zuloa"], rank=16, batch_size=batch,
                      contrastive_every=1 if rollout else 10**9, gradient_checkpointing=checkpointing,
                      device="cpu")
    device = torch.device("cpu")
    pipe, params, compute = build_scoft(cfg, device)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for step in range(repeats + 1):  # the first is a warm-up
        generator = step_generator(cfg, step, 0)
        tic = time.perf_counter()
        loss, _ = compute(step, compute.data.sample(batch, generator), generator, device)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tic)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step_s = sorted(times[1:])[len(times[1:]) // 2]
    return {"batch": batch, "rollout": rollout, "gradient_checkpointing": checkpointing,
            "step_s": step_s, "per_sample_s": step_s / batch,
            "peak_growth_mb": round((after - before) / 1024, 1)}


def run_case(args, batch: int, rollout: bool, checkpointing: bool) -> dict:
    cmd = [sys.executable, __file__, "--case", json.dumps([batch, rollout, checkpointing]),
           "--data", str(args.data), "--repeats", str(args.repeats)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("runs/bench-scoft/curated"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        batch, rollout, checkpointing = json.loads(args.case)
        print(json.dumps(measure(str(args.data), batch, rollout, checkpointing, args.repeats)))
        return
    ldm8 = run_case(args, 8, False, False)
    ldm1 = run_case(args, 1, False, False)
    lc8 = run_case(args, 8, True, False)
    lc8_ckpt = run_case(args, 8, True, True)
    report = {
        "date": str(date.today()), "machine": f"{platform.machine()}, CPU",
        "ldm_step_per_sample_s": ldm8["per_sample_s"],
        "contrastive_step_per_sample_s": lc8["per_sample_s"],
        "batch8_over_batch1_speedup_per_sample": ldm1["per_sample_s"] / ldm8["per_sample_s"],
        "contrastive_step_peak_growth_mb": {"without_checkpointing": lc8["peak_growth_mb"],
                                            "with_checkpointing": lc8_ckpt["peak_growth_mb"]},
        "contrastive_step_per_sample_s_with_checkpointing": lc8_ckpt["per_sample_s"],
        "cases": [ldm8, ldm1, lc8, lc8_ckpt],
    }
    out = Path("bench/results/scoft_speed.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "cases"}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
