"""``equigen demo``: the main job, end to end, on what ships with equigen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import ConfigOption, SetOption, example, resolve_config
from equigen.demo import DemoConfig, run_demo

EPILOG = example("equigen demo", "equigen demo --out runs/my-demo --set images_per_prompt=4")


def demo(
    out: Annotated[Optional[Path], typer.Option(help="Output folder.", show_default="runs/demo")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Run the demo pipeline end to end and write its images, dataset and manifest."""
    cfg = resolve_config(DemoConfig, config, set_, out=out)
    run_demo(cfg)
