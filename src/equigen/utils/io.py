"""Small file helpers: every write that a stop could interrupt goes to a temporary name first."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it into place, else delete it.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_csv_atomic(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """A CSV with a header from the first row's keys."""
    import csv

    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def append_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]],
               fieldnames: list[str] | None = None) -> None:
    """Append rows to a CSV log, writing the header when the file is new. Columns: ``fieldnames``
    (keys a row lacks are left empty, others ignored) or the first row's keys. Training loops call
    it right after a checkpoint, so the log never holds a step the checkpoint does not. An
    existing file keeps its own header (a run resumed by a newer version stays readable)."""
    import csv

    if not rows:
        return
    path = Path(path)
    new = not path.exists()
    if not new:
        with path.open(newline="") as handle:
            fieldnames = next(csv.reader(handle), None) or fieldnames
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames or list(rows[0]), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)
