"""``equigen demo``: the main job, end to end, on what ships with equigen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import ConfigOption, SetOption, example, resolve_config
from equigen.demo import DemoConfig, run_demo

EPILOG = example("equigen demo", "equigen demo --out runs/my-demo --set n_per_occupation=200")


def demo(
    out: Annotated[Optional[Path], typer.Option(help="Output folder.", show_default="runs/demo")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Show the mini-world base model and the skin-tone bias it inherited from its web corpus."""
    cfg = resolve_config(DemoConfig, config, set_, out=out)
    run_demo(cfg)
