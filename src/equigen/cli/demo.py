"""``equigen demo``: the main job, end to end, on what ships with equigen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import ConfigOption, SetOption, example, resolve_config
from equigen.demo import DemoConfig, run_demo

EPILOG = example("equigen demo", "equigen demo --fresh --out runs/my-demo --set n=100")


def demo(
    out: Annotated[Optional[Path], typer.Option(help="Output folder.", show_default="runs/demo")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Redo every stage (default: reuse the "
                                        "stages a previous run finished).")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """The whole story on the mini-world: audit the base model, repair it with Fair Mapping
    and SCoFT, learn from it with StableRep, and one report (runs/demo/report.html) with every
    headline figure and its interval. Resumable: finished stages are reused."""
    cfg = resolve_config(DemoConfig, config, set_, out=out, fresh=fresh or None)
    run_demo(cfg)
