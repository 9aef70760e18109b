"""Console output shared by every command: one rich console, progress bars that know when to hide."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True)  # progress, notes and errors
output = Console(soft_wrap=True)  # a command's results (tables, figures): what a user may pipe or save
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence progress bars and informational messages (errors still print)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def progress_enabled() -> bool:
    """Progress bars show only on an interactive terminal and when not ``--quiet``."""
    return not _quiet and console.is_terminal


def info(message: str) -> None:
    """Print an informational line (hidden by ``--quiet``)."""
    if not _quiet:
        console.print(message)


def make_progress() -> Progress:
    """A rich Progress with the project's columns; disabled when progress is not wanted."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress_enabled(),
        transient=False,
    )


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (a no-op wrapper when progress is disabled)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)
