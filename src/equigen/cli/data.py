"""``equigen data``: check and import captioned datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from equigen.cli.common import ConfigOption, SetOption, example, resolve_config
from equigen.config import StrictModel
from equigen.utils.console import info, output

app = typer.Typer(help="Check and import captioned image datasets (images + metadata.jsonl).",
                  no_args_is_help=True)


class CheckConfig(StrictModel):
    min_size: Optional[int] = None  # training resolution in pixels; smaller images are errors


@app.command(epilog=example("equigen data check data/ccub --min-size 512"))
def check(
    folder: Annotated[Path, typer.Argument(help="Dataset folder with metadata.jsonl.")],
    min_size: Annotated[Optional[int], typer.Option(help="Training size in pixels.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Report every problem in a captioned dataset; exit 1 if any is an error."""
    from equigen.data.check import check_dataset

    cfg = resolve_config(CheckConfig, config, set_, min_size=min_size)
    report = check_dataset(folder, min_size=cfg.min_size)
    if report.problems:
        table = Table(title=f"{folder}: {len(report.errors)} error(s), "
                            f"{len(report.problems) - len(report.errors)} note(s)")
        for column in ("severity", "problem", "where", "detail"):
            table.add_column(column, overflow="fold")
        for p in report.problems:
            colour = "red" if p.severity == "error" else "yellow"
            table.add_row(f"[{colour}]{p.severity}[/{colour}]", p.kind, p.where, p.message)
        output.print(table)
    info(f"{report.rows} rows, {report.images_checked} images checked: "
         + ("[green]OK[/green]" if report.ok else "[red]errors found[/red]"))
    if not report.ok:
        raise typer.Exit(1)


class CcubImportConfig(StrictModel):
    timeout: float = 10.0  # seconds per request
    retries: int = 3  # extra attempts after a timeout, connection error or 5xx
    backoff: float = 0.5  # seconds; doubled after every failed attempt
    max_mb: float = 20.0  # larger downloads are refused


@app.command(name="import-ccub",
             epilog=example("equigen data import-ccub ccub.csv --out data/ccub",
                            "equigen data import-ccub ccub.csv --out data/ccub --set timeout=30"))
def import_ccub_command(
    sheet: Annotated[Path, typer.Argument(help="CCUB sheet (CSV: country_code, category_code, "
                                          "url, caption).")],
    out: Annotated[Path, typer.Option(help="Dataset folder to write (resumes if it exists).")],
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Download the CCUB images into a captioned dataset; a re-run resumes where it stopped."""
    from equigen.data.ccub import REPORT_NAME, import_ccub

    cfg = resolve_config(CcubImportConfig, config, set_)
    report = import_ccub(sheet, out, timeout=cfg.timeout, retries=cfg.retries,
                         backoff=cfg.backoff, max_bytes=int(cfg.max_mb * 2**20))
    if report.failed:
        table = Table(title=f"{len(report.failed)} row(s) not imported (also in {out / REPORT_NAME})")
        for column in ("row", "url", "reason"):
            table.add_column(column, overflow="fold")
        for failure in report.failed:
            table.add_row(str(failure.row), failure.url, failure.reason)
        output.print(table)
    output.print(f"{report.downloaded} downloaded, {report.skipped_existing} already present, "
                 f"{len(report.failed)} failed -> {out}")
    if report.downloaded + report.skipped_existing == 0:
        raise typer.Exit(1)
