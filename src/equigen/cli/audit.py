"""``equigen audit``: measure how a text-to-image model depicts groups and cultures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import (
    ConfigOption,
    FairmapOption,
    LoraEverywhereOption,
    LoraOption,
    ModelOption,
    SetOption,
    example,
    resolve_config,
    state,
)
from equigen.utils.console import output

EPILOG = example(
    "equigen audit --n 200 --out runs/audit-base",
    "equigen audit --model runs/world-base/pipeline --prompts configs/prompts/mini-world-named.yaml "
    "--out runs/audit-named",
)


def audit(
    model: ModelOption = None,
    fairmap: FairmapOption = None,
    lora: LoraOption = None,
    lora_everywhere: LoraEverywhereOption = False,
    prompts: Annotated[Optional[Path], typer.Option(help="Prompt set YAML.", show_default=
                                                    "configs/prompts/mini-world-occupations.yaml")] = None,
    annotator: Annotated[Optional[str], typer.Option(help="Annotator: oracle, oracle:FOLDER, clip:CONFIG.yaml or "
                                                     "classifier:FOLDER.",
                                                     show_default="oracle")] = None,
    n: Annotated[Optional[int], typer.Option(help="Images per prompt.", show_default="100")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (resumes if it exists).",
                                                show_default="runs/audit")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Generate n images per prompt, annotate them and report representation metrics with 95%
    intervals (results.json, annotations.csv). A stopped audit resumes where it stopped."""
    from equigen.audit.run import AuditConfig, run_audit

    cfg = resolve_config(AuditConfig, config, set_, model=model, fairmap=fairmap, lora=lora,
                         lora_everywhere=lora_everywhere or None, prompts=prompts,
                         annotator=annotator, n=n, out=out)
    results = run_audit(cfg, allow_download=state.allow_download)
    for attribute, figures in results["summary"]["fairness"].items():
        fd = figures["fd"]
        output.print(f"{attribute}: FD {fd[0]:.3f} [{fd[1]:.3f}, {fd[2]:.3f}] over "
                     f"{figures['prompts']} prompt(s)")
    for attribute, acc in results["summary"]["alignment"].items():
        output.print(f"{attribute} when named: {acc[0]:.1%} [{acc[1]:.1%}, {acc[2]:.1%}]")
    output.print(f"results: {cfg.out / 'results.json'}")
