"""``equigen scoft``: SCoFT's negatives and its self-contrastive LoRA fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import ConfigOption, SetOption, example, resolve_config, state
from equigen.utils.console import output

app = typer.Typer(help="SCoFT: self-contrastive LoRA fine-tuning on a small curated set.",
                  no_args_is_help=True)


@app.command(epilog=example("equigen world export curated --out data/curated",
                            "equigen scoft negatives data/curated --k 4"))
def negatives(
    dataset: Annotated[Path, typer.Argument(help="Curated captioned dataset (metadata.jsonl).")],
    model: Annotated[Optional[str], typer.Option(help="The base model.",
                                                 show_default="mini-world")] = None,
    k: Annotated[Optional[int], typer.Option(help="Negatives per caption.", show_default="4")] = None,
    culture: Annotated[Optional[list[str]], typer.Option(help="Only rows of this culture "
                                                         "(repeatable).", show_default="all")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Generate k images of every caption with the base model and list them in the dataset's
    `negatives` column (resumable)."""
    from equigen.methods.scoft import NegativesConfig, make_negatives

    cfg = resolve_config(NegativesConfig, config, set_, dataset=dataset, model=model, k=k,
                         cultures=culture or None)
    made = make_negatives(cfg, allow_download=state.allow_download)
    output.print(f"{made} negatives generated in {dataset / 'negatives'}")


@app.command(epilog=example(
    "equigen scoft negatives data/curated --culture Kethu --culture Zuloa",
    "equigen scoft train --config configs/scoft/mini-world.yaml --out runs/scoft",
    "equigen audit --lora runs/scoft --prompts configs/prompts/mini-world-cultures.yaml --out runs/audit-scoft",
    "accelerate launch --num_processes 8 -m equigen scoft train --config my.yaml --set batch_size=4"))
def train(
    data: Annotated[Optional[Path], typer.Option(help="Curated captioned dataset with negatives.",
                                                 show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="The base model.",
                                                 show_default="mini-world")] = None,
    culture: Annotated[Optional[list[str]], typer.Option(help="Train on this culture "
                                                         "(repeatable).", show_default="all")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps.", show_default="1000")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (resumes if it has a checkpoint).",
                                                show_default="runs/scoft")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Fine-tune a LoRA on the UNet's attention with SCoFT's losses (0.7 L_LDM + 0.3 L_M +
    0.05 L_C + 0.01 L_P; set a weight to 0 to switch its term off). Writes diffusers-format
    LoRA weights (`--lora RUN` in audit / synth), loss.csv and a manifest; resumable."""
    from equigen.methods.scoft import ScoftConfig, train_scoft

    cfg = resolve_config(ScoftConfig, config, set_, data=data, model=model,
                         cultures=culture or None, steps=steps, out=out)
    summary = train_scoft(cfg, allow_download=state.allow_download)
    output.print(f"LoRA written to {summary['lora']} ({summary['steps']} steps, "
                 f"{summary['seconds']:.0f} s)")
