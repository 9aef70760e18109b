"""``equigen report``: one self-contained HTML page for an audit, or a before/after comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import example
from equigen.utils.console import info

EPILOG = example("equigen report runs/audit",
                 "equigen report runs/audit-base runs/audit-fairmap --out compare.html")


def report(
    runs: Annotated[list[Path], typer.Argument(
        help="Audit folder(s) written by `equigen audit`. With several, the first is the baseline "
             "and each other is compared with it on the prompts they share.",
        metavar="RUN...", show_default=False)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="HTML file to write.",
        show_default="RUN/report.html for one run, ./report.html for several")] = None,
    title: Annotated[Optional[str], typer.Option(help="Page title.", show_default=False)] = None,
) -> None:
    """Write an HTML report (works offline): metrics with 95% intervals, image grids and charts,
    worst prompts first; with several runs, the change of every figure and whether it is clear."""
    from equigen.audit.report import write_report

    if out is None:
        out = runs[0] / "report.html" if len(runs) == 1 else Path("report.html")
    written = write_report(list(runs), out, title=title)
    info(f"report written to {written}")
