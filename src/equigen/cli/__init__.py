"""The ``equigen`` command line: one typer app, one group per part of the toolkit."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from equigen import __version__
from equigen.cli import annotators, audit, data, demo, fairmap, report, scoft, stablerep, synth, world
from equigen.cli.common import state
from equigen.errors import EquigenError
from equigen.utils.console import console, set_quiet

app = typer.Typer(
    name="equigen",
    help="Equitable text-to-image generation: audit a model's representation of people and "
    "cultures, repair it (Fair Mapping, SCoFT), learn from its images (StableRep).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="[bold]Example[/bold]\n\n  $ equigen demo\n\n  $ equigen data check data/ccub",
)

app.add_typer(world.app, name="world")
app.command(name="audit", epilog=audit.EPILOG)(audit.audit)
app.add_typer(fairmap.app, name="fairmap")
app.add_typer(scoft.app, name="scoft")
app.command(name="synth", epilog=synth.EPILOG)(synth.synth)
app.add_typer(stablerep.app, name="stablerep")
app.command(name="report", epilog=report.EPILOG)(report.report)
app.add_typer(annotators.app, name="annotators")
app.add_typer(data.app, name="data")
app.command(name="demo", epilog=demo.EPILOG)(demo.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"equigen {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Let model loading reach the Hugging Face hub "
                           "(offline by default).")
    ] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Options that apply to every command."""
    from equigen.models.loading import quiet_hf_libraries, set_offline

    set_quiet(quiet)
    state.debug = debug or os.environ.get("EQUIGEN_DEBUG") == "1"
    state.allow_download = allow_download
    set_offline(not allow_download)
    quiet_hf_libraries()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one line and exit 1 (a traceback only with --debug)."""
    try:
        app(args=argv, prog_name="equigen")
    except EquigenError as exc:
        if state.debug:
            raise
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if state.debug:
            raise
        console.print(f"[red]error:[/red] {type(exc).__name__}: {escape(str(exc))} "
                      "(run with --debug for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)
