"""``equigen stablerep``: train an encoder on synthetic (or real) images, and probe it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import ConfigOption, SetOption, example, resolve_config
from equigen.utils.console import output

app = typer.Typer(help="StableRep: learn visual representations from synthetic images "
                  "(StableRep, StableRep+, and SimCLR / CLIP baselines), and linear probes.",
                  no_args_is_help=True)


@app.command(epilog=example(
    "equigen stablerep train --data runs/synth --out runs/stablerep",
    "equigen stablerep train --method simclr --data data/web --out runs/simclr",
    "accelerate launch --num_processes 8 -m equigen stablerep train --config configs/stablerep/mini-world.yaml"))
def train(
    data: Annotated[Optional[Path], typer.Option(help="Synth shards folder (stablerep*) or a "
                                                 "captioned dataset (simclr, clip).",
                                                 show_default=False)] = None,
    method: Annotated[Optional[str], typer.Option(help="stablerep, stablerep_plus, simclr or clip.",
                                                  show_default="stablerep")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (resumes if it exists).",
                                                show_default="runs/stablerep")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps.", show_default="1000")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Train (or resume) a contrastive encoder: a timm backbone + MLP head."""
    from equigen.methods.stablerep.train import StableRepConfig, train_stablerep

    cfg = resolve_config(StableRepConfig, config, set_, data=data, method=method, out=out,
                         steps=steps)
    summary = train_stablerep(cfg)
    output.print(f"trained {cfg.method} for {summary['steps']} steps "
                 f"({summary['seconds']:.0f} s this run); checkpoint in {cfg.out}")


@app.command(epilog=example("equigen world export probe --out data/probe",
                            "equigen stablerep probe runs/stablerep --data data/probe"))
def probe(
    run: Annotated[Path, typer.Argument(help="A `stablerep train` run folder.")],
    data: Annotated[Optional[Path], typer.Option(help="Labelled captioned dataset with a split "
                                                 "column.", show_default="data/probe")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Linear probes on frozen features (cached once): top-1 on the test split per label,
    learning rate chosen on a validation part of the train split."""
    from equigen.methods.stablerep.probe import ProbeConfig, run_probe

    cfg = resolve_config(ProbeConfig, config, set_, run=run, data=data)
    results = run_probe(cfg)
    for label in cfg.labels:
        r = results[label]
        gap = f", gap across {cfg.group_by} {r['group_gap']:.1%}" if cfg.group_by else ""
        output.print(f"{label}: top-1 {r['test_accuracy']:.1%} (lr {r['best_lr']}{gap})")
    output.print(f"mean: {results['mean_test_accuracy']:.1%}; written to {cfg.run / 'probe.json'}")
