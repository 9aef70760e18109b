"""Pieces every command shares: the config options and the global state set by the root callback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from pydantic import BaseModel

from equigen.config import load_config

M = TypeVar("M", bound=BaseModel)


@dataclass
class GlobalState:
    debug: bool = False
    allow_download: bool = False


state = GlobalState()

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config file (see configs/).", show_default=False),
]
# The generation options every generating command shares, with one wording.
ModelOption = Annotated[
    Optional[str],
    typer.Option(help="Model: mini-world, a diffusers folder or a hub id.", show_default="mini-world"),
]
FairmapOption = Annotated[
    Optional[Path],
    typer.Option(help="Fair Mapping folder to apply (from `equigen fairmap train`).",
                 show_default=False),
]
LoraOption = Annotated[
    Optional[Path],
    typer.Option(help="LoRA weights in diffusers format, a folder (e.g. from `equigen scoft "
                 "train`) or a .safetensors file.", show_default=False),
]
LoraEverywhereOption = Annotated[
    bool,
    typer.Option("--lora-everywhere", help="Apply the LoRA to every prompt, not only to the "
                 "prompts of its saved scope (a SCoFT LoRA: those naming its cultures).",
                 show_default=False),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key, e.g. --set seed=3 (repeatable).",
                 show_default=False),
]


def resolve_config(config_class: type[M], config: Path | None, overrides: list[str] | None,
                   **values: Any) -> M:
    """The command's validated config. ``values``: flags given on the command line (dotted keys
    written with ``__``, e.g. ``train__lr``); ``None`` means the flag was not given."""
    dotted = {key.replace("__", "."): value for key, value in values.items()}
    return load_config(config_class, config, overrides or (), values=dotted)


def example(*lines: str) -> str:
    """An epilog with examples for ``--help``."""
    return "[bold]Example[/bold]\n\n" + "\n\n".join(f"  $ {line}" for line in lines)

