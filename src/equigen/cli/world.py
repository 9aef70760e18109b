"""``equigen world``: the built-in mini-world (datasets with ground truth, and its base model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import ConfigOption, SetOption, example, resolve_config
from equigen.config import StrictModel
from equigen.utils.console import output

app = typer.Typer(help="The mini-world: a procedural world whose biases have ground truth, and "
                  "its small Stable-Diffusion-style base model.", no_args_is_help=True)


class ExportConfig(StrictModel):
    n: Optional[int] = None  # images; None: the distribution's default size
    seed: int = 0
    size: int = 64


@app.command(epilog=example("equigen world export web --out data/web --n 2000",
                            "equigen world export curated --out data/curated"))
def export(
    name: Annotated[str, typer.Argument(help="Distribution: web, curated, balanced or probe.")],
    out: Annotated[Path, typer.Option(help="Dataset folder to write (resumes if it exists).")],
    n: Annotated[Optional[int], typer.Option(help="Number of images.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Sampling seed.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Render a mini-world distribution as a captioned dataset with every ground-truth attribute."""
    from equigen.world.export import export_distribution

    cfg = resolve_config(ExportConfig, config, set_, n=n, seed=seed)
    folder = export_distribution(name, out, n=cfg.n, seed=cfg.seed, size=cfg.size)
    output.print(f"wrote {folder}")


@app.command(name="train-base",
             epilog=example("equigen world train-base --config configs/world/base.yaml",
                            "equigen world train-base --config configs/world/base.yaml "
                            "--set unet.steps=8000"))
def train_base_command(
    config: ConfigOption = None,
    set_: SetOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (checkpoints, logs, pipeline).")] = None,
) -> None:
    """Train the mini-world base model on the biased web corpus (resumes from checkpoints)."""
    from equigen.world.train_base import BaseTrainConfig, train_base

    cfg = resolve_config(BaseTrainConfig, config, set_, out=out)
    folder = train_base(cfg)
    output.print(f"pipeline written to {folder}")


@app.command(name="train-oracle",
             epilog=example("equigen world train-oracle",
                            "equigen world train-oracle --out runs/oracle --set epochs=4"))
def train_oracle_command(
    config: ConfigOption = None,
    set_: SetOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the oracle weights "
                                                "(default: the shipped location).")] = None,
) -> None:
    """Train the oracle annotators (one head per attribute) on probe renders."""
    from equigen.world.oracle import OracleTrainConfig, train_oracle

    cfg = resolve_config(OracleTrainConfig, config, set_, out=out)
    accuracy = train_oracle(cfg)
    output.print("held-out accuracy: " + ", ".join(f"{a} {v:.2%}" for a, v in accuracy.items()))


@app.command(name="export-base",
             epilog=example("equigen world export-base --run runs/world-base"))
def export_base_command(
    run: Annotated[Path, typer.Option(help="A train-base run folder.")],
    to: Annotated[Optional[Path], typer.Option(help="Destination pipeline folder "
                                               "(default: the shipped mini-world).")] = None,
) -> None:
    """Export a (finished or still training) base-model run as the mini-world pipeline."""
    from equigen.world.model import SHIPPED_DIR
    from equigen.world.train_base import export_pipeline

    record = export_pipeline(run, to or SHIPPED_DIR)
    stages = f"UNet step {record['unet']['steps']}/{record['unet']['of_planned']}"
    for number, round_record in enumerate(record["recaption"], start=1):
        stages += f", recaption round {number} step {round_record['steps']}/{round_record['of_planned']}"
    output.print(f"exported {stages} to {to or SHIPPED_DIR}")
