"""``equigen data check``: find every problem in a captioned dataset before a long run trips on it.

Nothing is skipped silently: each defect becomes a :class:`Problem` with where it is, what it is
and what to do. Errors make the check fail; notes (e.g. a CMYK image that loaders will convert to
RGB) do not.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from equigen.data.captioned import IMAGE_SUFFIXES, METADATA_NAME, CaptionRecord, resolve_in_root
from equigen.errors import EquigenError

Severity = Literal["error", "note"]


@dataclass(frozen=True)
class Problem:
    severity: Severity
    kind: str  # a short stable name, e.g. "missing-image"
    where: str  # "metadata.jsonl:12" or a file name
    message: str


@dataclass
class DatasetReport:
    root: Path
    rows: int = 0
    images_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, severity: Severity, kind: str, where: str, message: str) -> None:
        self.problems.append(Problem(severity, kind, where, message))


def check_dataset(root: str | Path, min_size: int | None = None) -> DatasetReport:
    """Check ``root/metadata.jsonl`` and every image it names (``min_size``: training size in px)."""
    root = Path(root)
    report = DatasetReport(root)
    meta = root / METADATA_NAME
    if not root.is_dir():
        raise EquigenError(f"dataset folder not found: {root}")
    if not meta.is_file():
        report.add("error", "no-metadata", str(meta), f"no {METADATA_NAME} in the folder")
        return report

    listed: set[Path] = set()
    first_line_of: dict[str, int] = {}
    for line_no, record in _read_rows(meta, report):
        where = f"{METADATA_NAME}:{line_no}"
        report.rows += 1
        if not record.text.strip():
            report.add("error", "empty-caption", where, f"empty caption for {record.file_name!r}")
        if record.generic_text is not None and not record.generic_text.strip():
            report.add("error", "empty-caption", where, f"empty generic_text for {record.file_name!r}")
        if record.file_name in first_line_of:
            report.add(
                "error", "duplicate-file-name", where,
                f"{record.file_name!r} is also on line {first_line_of[record.file_name]}",
            )
            continue
        first_line_of[record.file_name] = line_no
        image = _check_path(root, record.file_name, where, report)
        if image is not None:
            listed.add(image)
            _check_image(image, record.file_name, where, min_size, report)
        for negative in record.negatives:
            path = _check_path(root, negative, where, report, what="negative")
            if path is not None and path not in listed:
                listed.add(path)
                _check_image(path, negative, where, None, report)

    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.resolve() not in listed:
            report.add("note", "unlisted-image", path.relative_to(root).as_posix(),
                       f"not in {METADATA_NAME}; it will not be used")
    return report


def _read_rows(meta: Path, report: DatasetReport):
    with meta.open(encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{METADATA_NAME}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                report.add("error", "malformed-json", where, f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(row, dict):
                report.add("error", "malformed-json", where, "a row must be a JSON object")
                continue
            try:
                yield line_no, CaptionRecord.model_validate(row)
            except ValidationError as exc:
                for err in exc.errors():
                    key = ".".join(str(p) for p in err["loc"])
                    report.add("error", "bad-row", where, f"column '{key}': {err['msg']}")


def _check_path(root: Path, relative: str, where: str, report: DatasetReport,
                what: str = "image") -> Path | None:
    try:
        path = resolve_in_root(root, relative)
    except EquigenError as exc:
        report.add("error", "path-escapes", where, f"{what} {exc}")
        return None
    if not path.is_file():
        report.add("error", f"missing-{what}", where, f"{what} {relative!r} does not exist")
        return None
    return path


def _check_image(path: Path, relative: str, where: str, min_size: int | None,
                 report: DatasetReport) -> None:
    report.images_checked += 1
    try:
        with Image.open(path) as image:
            image.load()  # decodes every pixel: catches truncated files that verify() lets through
            mode, size = image.mode, image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        report.add("error", "corrupt-image", where, f"{relative!r} cannot be decoded: {exc}")
        return
    if mode != "RGB":
        report.add("note", "not-rgb", where, f"{relative!r} is {mode}; loaders convert it to RGB")
    if min_size is not None and min(size) < min_size:
        report.add("error", "too-small", where,
                   f"{relative!r} is {size[0]}x{size[1]}, smaller than the training size {min_size}")
