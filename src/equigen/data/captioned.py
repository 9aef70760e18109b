"""The captioned dataset format every equigen command reads and writes.

A dataset is a folder (the Hugging Face ``imagefolder`` convention, as CCUB uses it)::

    my_set/
      metadata.jsonl        one JSON object per line, one line per image
      images/0001.png ...   any layout below the folder

Each row has ``file_name`` (path relative to the folder) and ``text`` (the caption); optional
``culture``, ``category``, ``generic_text`` (a plain caption of the same image, for SCoFT's
memorization penalty), ``negatives`` (paths relative to the folder) and any ground-truth attribute
columns (``tone``, ``region``, ...), which are kept as they are.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from equigen.errors import EquigenError
from equigen.utils.io import write_jsonl_atomic

METADATA_NAME = "metadata.jsonl"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class CaptionRecord(BaseModel):
    """One row of ``metadata.jsonl``. Unknown columns are kept as ground-truth attributes."""

    model_config = ConfigDict(extra="allow")

    file_name: str
    text: str
    culture: str | None = None
    category: str | None = None
    generic_text: str | None = None
    negatives: list[str] = Field(default_factory=list)

    @property
    def attributes(self) -> dict[str, Any]:
        """The extra (ground-truth attribute) columns."""
        return dict(self.model_extra or {})


def resolve_in_root(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths and paths that escape ``root``."""
    if not relative:
        raise EquigenError("empty path")
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute():
        raise EquigenError(f"path {relative!r} is absolute; paths must be relative to {root}")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise EquigenError(f"path {relative!r} escapes the dataset folder {root}")
    return resolved


def load_records(root: str | Path) -> list[CaptionRecord]:
    """Read and validate ``root/metadata.jsonl``; any malformed row is an error naming its line.

    For a full report of every problem (images too) use :func:`equigen.data.check.check_dataset`.
    """
    root = Path(root)
    path = root / METADATA_NAME
    if not path.is_file():
        raise EquigenError(f"{path}: not found (a dataset folder needs a {METADATA_NAME})")
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(CaptionRecord.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise EquigenError(f"{path}:{line_no}: {_describe_row_error(exc)}") from exc
    return records


def _describe_row_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON ({exc.msg} at column {exc.colno})"
    assert isinstance(exc, ValidationError)
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    return f"column '{key}': {first['msg']}"


def write_records(root: str | Path, records: list[CaptionRecord | dict[str, Any]]) -> Path:
    """Write ``root/metadata.jsonl`` atomically (exclude_none keeps rows short)."""
    rows = [
        r.model_dump(exclude_none=True) if isinstance(r, BaseModel) else dict(r) for r in records
    ]
    for row in rows:
        if not row.get("negatives"):
            row.pop("negatives", None)
    path = Path(root) / METADATA_NAME
    write_jsonl_atomic(path, rows)
    return path
