"""Audit a pipeline you built yourself, with the Python API (no CLI).

    python examples/audit_your_pipeline.py                       # the mini-world, 20 images per prompt
    python examples/audit_your_pipeline.py --model path/to/diffusers-folder --n 50

Any diffusers text-to-image pipeline works: load it, change what you like (scheduler, LoRA,
attention processors), and hand it to ``run_audit``. Here: the mini-world's model with a
different scheduler, audited on the neutral occupation prompts with the mini-world oracle.
"""

import argparse
from pathlib import Path

from diffusers import EulerDiscreteScheduler

from equigen.audit.report import write_report
from equigen.audit.run import AuditConfig, run_audit
from equigen.models import load_pipeline

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model", default="mini-world")
parser.add_argument("--prompts", type=Path, default=Path("configs/prompts/mini-world-occupations.yaml"))
parser.add_argument("--n", type=int, default=20)
parser.add_argument("--steps", type=int, default=25)
parser.add_argument("--out", type=Path, default=Path("runs/example-audit"))
args = parser.parse_args()

pipe = load_pipeline(args.model)
pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # your change

config = AuditConfig(model=f"{args.model} + Euler scheduler", prompts=args.prompts, n=args.n,
                     steps=args.steps, out=args.out)
results = run_audit(config, pipe=pipe)
for attribute, figures in results["summary"]["fairness"].items():
    fd, low, high = figures["fd"]
    print(f"{attribute}: FD {fd:.3f} [{low:.3f}, {high:.3f}]")
print("report:", write_report([args.out], args.out / "report.html"))
