"""``equigen fairmap``: train a Fair Mapping, or sweep its fairness weight."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import ConfigOption, SetOption, example, resolve_config, state
from equigen.models.defaults import DEFAULT_STEPS
from equigen.utils.console import output

app = typer.Typer(help="Fair Mapping: debias a frozen model with a small map on its prompt "
                  "embeddings.", no_args_is_help=True)


@app.command(epilog=example(
    "equigen fairmap train --config configs/fairmap/mini-world.yaml --out runs/fairmap",
    "equigen audit --fairmap runs/fairmap --out runs/audit-fairmap"))
def train(
    config: ConfigOption = None,
    model: Annotated[Optional[str], typer.Option(help="Model: mini-world, a diffusers folder or a "
                                                 "hub id.", show_default="from the config")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the map (fairmap.safetensors + "
                                                "fairmap.json).", show_default="runs/fairmap")] = None,
    fair_weight: Annotated[Optional[float], typer.Option(
        "--lambda", help="Fairness weight (lambda).", show_default="from the config")] = None,
    set_: SetOption = None,
) -> None:
    """Train the map on the config's neutral prompts and their group variants; only the map
    learns. Use it with --fairmap in audit and generation commands."""
    from equigen.methods.fairmap import FairMapConfig, train_fairmap

    cfg = resolve_config(FairMapConfig, config or _default_config(), set_, model=model, out=out,
                         fair_weight=fair_weight)
    mapping = train_fairmap(cfg, allow_download=state.allow_download)
    training = mapping.info["training"]
    for split, before in training["fair_penalty_before"].items():
        output.print(f"fair penalty ({split} prompts): {before:.4f} -> "
                     f"{training['fair_penalty_after'][split]:.4f}")
    output.print(f"wrote {cfg.out}")


@app.command(epilog=example(
    "equigen fairmap sweep --config configs/fairmap/mini-world.yaml --lambdas 0.1,1,10 "
    "--out runs/fairmap-sweep"))
def sweep(
    config: ConfigOption = None,
    lambdas: Annotated[str, typer.Option(help="Comma-separated fairness weights.")] = "0.1,1,10",
    fairness_prompts: Annotated[Optional[Path], typer.Option(
        help="Prompt set whose fairness is measured (neutral prompts).",
        show_default="configs/prompts/mini-world-heldout-occupations.yaml")] = None,
    fidelity_prompts: Annotated[Optional[Path], typer.Option(
        help="Prompt set whose named-attribute accuracy is measured.",
        show_default="configs/prompts/mini-world-fidelity.yaml")] = None,
    n: Annotated[int, typer.Option(min=2, help="Images per fairness prompt (>= 2: the "
                                   "interval needs a spread).")] = 40,
    n_fidelity: Annotated[int, typer.Option(min=1, help="Images per fidelity prompt.")] = 4,
    sample_steps: Annotated[int, typer.Option(min=1, help="Sampler steps of the audits' "
                                              "generations.")] = DEFAULT_STEPS,
    annotator: Annotated[str, typer.Option(help="Annotator for the audits.")] = "oracle",
    out: Annotated[Path, typer.Option(help="Sweep folder (resumes if it exists).")] = Path(
        "runs/fairmap-sweep"),
    set_: SetOption = None,
) -> None:
    """Train one map per lambda, audit each against the base model, and write a report with the
    fairness / fidelity curve (sweep.json, report.html). Finished maps and audits are reused."""
    from equigen.methods.fairmap import FairMapConfig
    from equigen.methods.fairmap.sweep import SweepPlan, run_sweep

    cfg = resolve_config(FairMapConfig, config or _default_config(), set_)
    try:
        weights = [float(x) for x in lambdas.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--lambdas {lambdas!r}: give numbers separated by commas")
    plan = SweepPlan(weights=weights, n=n, n_fidelity=n_fidelity, annotator=annotator, out=out,
                     steps=sample_steps,
                     **({"fairness_prompts": fairness_prompts} if fairness_prompts else {}),
                     **({"fidelity_prompts": fidelity_prompts} if fidelity_prompts else {}))
    table = run_sweep(cfg, plan, allow_download=state.allow_download)
    for row in table:
        output.print(f"{row['label']:>8}: FD {row['fd'][0]:.3f} [{row['fd'][1]:.3f}, "
                     f"{row['fd'][2]:.3f}]  fidelity {row['fidelity'][0]:.1%}")
    output.print(f"report: {out / 'report.html'}")


def _default_config() -> Path:
    return Path("configs/fairmap/mini-world.yaml")
