"""``equigen scoft``: SCoFT's negatives (built) and fine-tuning (issue #6, not built yet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import ConfigOption, SetOption, example, resolve_config, state
from equigen.utils.console import output

app = typer.Typer(help="SCoFT: self-contrastive LoRA fine-tuning on a small curated set "
                  "([dim]train: not built yet, issue #6[/dim]).", no_args_is_help=True)


@app.command(epilog=example("equigen world export curated --out data/curated",
                            "equigen scoft negatives data/curated --k 4"))
def negatives(
    dataset: Annotated[Path, typer.Argument(help="Curated captioned dataset (metadata.jsonl).")],
    model: Annotated[Optional[str], typer.Option(help="The base model.",
                                                 show_default="mini-world")] = None,
    k: Annotated[Optional[int], typer.Option(help="Negatives per caption.", show_default="4")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Generate k images of every caption with the base model and list them in the dataset's
    `negatives` column (resumable)."""
    from equigen.methods.scoft import NegativesConfig, make_negatives

    cfg = resolve_config(NegativesConfig, config, set_, dataset=dataset, model=model, k=k)
    made = make_negatives(cfg, allow_download=state.allow_download)
    output.print(f"{made} negatives generated in {dataset / 'negatives'}")


@app.command()
def train() -> None:
    """Fine-tune a LoRA with SCoFT's losses (not built yet: issue #6)."""
    from equigen.errors import EquigenError

    raise EquigenError("'equigen scoft train' is not available in this version yet (issue #6)")
