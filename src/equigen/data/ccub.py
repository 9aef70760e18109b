"""Import the CCUB sheet (SCoFT's Cross-Cultural Understanding Benchmark) into the dataset format.

CCUB ships as a CSV sheet, one row per image, with the columns ``country_code``, ``category_code``,
``url`` and ``caption``. :func:`import_ccub` downloads every image into ``out_dir`` as::

    out_dir/
      images/{country_code}/{category_code}_{sha1(url)[:12]}.{ext}   the bytes as downloaded
      metadata.jsonl                                                   one row per imported image
      import_report.json                                               counts and every failed row

Downloads are checked (HTTP status, ``Content-Type: image/*``, a size cap, a full PIL decode) and
written atomically, so a stop at any moment leaves only complete images. A re-run skips every row
whose image is already on disk and decodes, so an interrupted import simply resumes.

Row numbers are spreadsheet rows: the header is row 1, the first image is row 2.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageFile

from equigen.data.captioned import CaptionRecord, write_records
from equigen.errors import EquigenError
from equigen.utils.console import info, track
from equigen.utils.io import atomic_path, write_json_atomic

REQUIRED_COLUMNS = ("country_code", "category_code", "url", "caption")
REPORT_NAME = "import_report.json"
IMAGES_DIR = "images"
USER_AGENT = "equigen-ccub-import/0.1 (Python urllib)"

# PIL format name -> file extension (anything else: the format name in lower case).
_EXTENSIONS = {
    "JPEG": "jpg",
    "MPO": "jpg",  # multi-picture JPEG from phone cameras; a plain JPEG reader opens it
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
}
_CHUNK = 64 * 1024
_MAX_LISTED_PROBLEMS = 20


class ImportFailure(NamedTuple):
    """One sheet row that could not be imported."""

    row: int
    url: str
    reason: str


@dataclass
class ImportReport:
    """What :func:`import_ccub` did: ``downloaded + skipped_existing + len(failed)`` rows."""

    downloaded: int = 0
    skipped_existing: int = 0
    failed: list[ImportFailure] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.downloaded + self.skipped_existing + len(self.failed)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class CcubRow:
    """One validated row of the sheet."""

    row: int
    country_code: str
    category_code: str
    url: str
    caption: str

    @property
    def stem(self) -> str:
        """The image path relative to the dataset folder, without the extension."""
        digest = hashlib.sha1(self.url.encode("utf-8")).hexdigest()[:12]
        country = _path_component(self.country_code)
        category = _path_component(self.category_code)
        return f"{IMAGES_DIR}/{country}/{category}_{digest}"


def _path_component(value: str) -> str:
    """``value`` made safe as one folder/file name part (no separators, no leading dot)."""
    safe = re.sub(r"[^\w.-]", "_", value).lstrip(".")
    return safe or "_"


# --------------------------------------------------------------------------------------- the sheet


def read_ccub_sheet(sheet: str | Path) -> list[CcubRow]:
    """Read and validate the CCUB CSV; every structural problem is an :class:`EquigenError`.

    Column names are matched ignoring case and surrounding spaces; extra columns are ignored.
    Every row needs a non-empty ``country_code``, ``category_code``, ``url`` and ``caption``.
    """
    sheet = Path(sheet)
    if not sheet.is_file():
        raise EquigenError(f"{sheet}: CCUB sheet not found (expected a CSV file with columns "
                           f"{', '.join(REQUIRED_COLUMNS)})")
    try:
        with sheet.open(encoding="utf-8-sig", newline="") as handle:
            table = list(csv.reader(handle))
    except UnicodeDecodeError as exc:
        raise EquigenError(f"{sheet}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); "
                           "save the sheet as UTF-8 CSV") from exc
    except csv.Error as exc:
        raise EquigenError(f"{sheet}: malformed CSV ({exc})") from exc

    # Lines that are entirely blank carry no row.
    table = [line for line in table if any(cell.strip() for cell in line)]
    if not table:
        raise EquigenError(f"{sheet}: the sheet is empty (expected a header row with columns "
                           f"{', '.join(REQUIRED_COLUMNS)})")
    header = [name.strip().lower() for name in table[0]]
    duplicates = sorted({name for name in header if name and header.count(name) > 1})
    if duplicates:
        names = ", ".join(map(repr, duplicates))
        raise EquigenError(f"{sheet}: duplicate column(s) {names} in the header")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise EquigenError(
            f"{sheet}: missing column(s) {', '.join(map(repr, missing))}; the header has "
            f"{', '.join(repr(c.strip()) for c in table[0])}; expected columns "
            f"{', '.join(REQUIRED_COLUMNS)}"
        )
    index = {name: header.index(name) for name in REQUIRED_COLUMNS}

    rows: list[CcubRow] = []
    problems: list[str] = []
    for row_no, cells in enumerate(table[1:], start=2):
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            problems.append(f"row {row_no}: {len(cells)} fields but the header has {len(header)} "
                            "(an unquoted comma in a caption?)")
            continue
        values = {name: (cells[i].strip() if i < len(cells) else "") for name, i in index.items()}
        empty = [name for name in REQUIRED_COLUMNS if not values[name]]
        if empty:
            problems.append(f"row {row_no}: empty {', '.join(empty)}")
            continue
        rows.append(CcubRow(row=row_no, **values))
    if problems:
        shown = problems[:_MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        listing = "; ".join(shown) + (f"; and {more} more" if more else "")
        raise EquigenError(f"{sheet}: {len(problems)} invalid row(s): {listing}")
    if not rows:
        raise EquigenError(f"{sheet}: the sheet has a header but no rows")
    return rows


# -------------------------------------------------------------------------------------- downloading


class _RowFailed(Exception):
    """A download failed for good (no retry); the message is the reason shown to the user."""


class _Transient(Exception):
    """A download failed in a way worth retrying (timeout, connection error, 5xx)."""


def _request_url(url: str) -> str:
    """Percent-encode spaces and non-ASCII characters that sheets often contain in URLs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    path = urllib.parse.quote(parts.path, safe="/%:@!$&'()*+,;=~")
    query = urllib.parse.quote(parts.query, safe="=&%/:?@!$'()*+,;~")
    return urllib.parse.urlunsplit((parts.scheme, host, path, query, ""))


def _fetch_once(url: str, *, timeout: float, max_bytes: int) -> tuple[bytes, str]:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (scheme checked)
    except urllib.error.HTTPError as exc:
        exc.close()
        reason = f"HTTP {exc.code} {exc.reason}".rstrip()
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Transient(reason) from exc
        raise _RowFailed(reason) from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            raise _Transient(f"timed out after {timeout:g} s") from exc
        if isinstance(exc.reason, OSError):
            raise _Transient(f"connection error: {exc.reason}") from exc
        raise _RowFailed(f"cannot open URL: {exc.reason}") from exc
    except (TimeoutError, socket.timeout) as exc:
        raise _Transient(f"timed out after {timeout:g} s") from exc
    except (http.client.HTTPException, ConnectionError) as exc:
        raise _Transient(f"connection error: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:  # malformed URL (http.client.InvalidURL is a ValueError)
        raise _RowFailed(f"invalid URL: {exc}") from exc

    with response:
        content_type = response.headers.get("Content-Type")
        if not content_type:
            raise _RowFailed("no Content-Type header (expected image/*)")
        mime = response.headers.get_content_type()
        if not mime.startswith("image/"):
            raise _RowFailed(f"Content-Type is {mime!r}, not an image (expected image/*)")
        length = response.headers.get("Content-Length")
        if length and length.strip().isdigit() and int(length) > max_bytes:
            raise _RowFailed(f"too large: Content-Length {int(length)} bytes is above the "
                             f"max_bytes cap of {max_bytes}")
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = response.read(min(_CHUNK, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise _RowFailed(f"too large: the response exceeds the max_bytes cap of "
                                     f"{max_bytes} bytes (stopped reading)")
        except (TimeoutError, socket.timeout) as exc:
            raise _Transient(f"timed out after {timeout:g} s while reading the body") from exc
        except (http.client.HTTPException, ConnectionError) as exc:
            raise _Transient(f"connection broken while reading the body: "
                             f"{type(exc).__name__}: {exc}") from exc
    return b"".join(chunks), mime


def _fetch(
    url: str, *, timeout: float, retries: int, backoff: float, max_bytes: int
) -> tuple[bytes, str]:
    """GET ``url`` (retrying transient failures with exponential backoff); the body and its MIME."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise _RowFailed(f"unsupported URL scheme {scheme or '(none)'!r} (expected http or https)")
    try:
        target = _request_url(url)
    except (UnicodeError, ValueError) as exc:
        raise _RowFailed(f"invalid URL: {exc}") from exc
    attempts = max(0, retries) + 1
    for attempt in range(attempts):
        try:
            return _fetch_once(target, timeout=timeout, max_bytes=max_bytes)
        except _Transient as exc:
            if attempt + 1 == attempts:
                tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
                raise _RowFailed(f"{exc} ({tries})") from exc
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


def _decode(data: bytes, what: str, mime: str | None = None) -> str:
    """Fully decode ``data`` with PIL and return its format; failures name the problem."""
    if not data:
        raise _RowFailed(f"{what} is empty")
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated image must fail, whatever others set
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            image.load()
    except Image.DecompressionBombError as exc:
        raise _RowFailed(f"{what} is too large to decode safely: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad data
        head = data[:256].lstrip().lower()
        if head.startswith(b"<"):  # <!doctype html>, <html>, <?xml ...>, <svg ...>
            served = f" (served as Content-Type {mime})" if mime else ""
            raise _RowFailed(f"{what} is HTML/XML text, not an image{served}") from exc
        message = str(exc) or type(exc).__name__
        if "truncated" in message.lower() or isinstance(exc, (EOFError, SyntaxError)):
            raise _RowFailed(f"{what} is a truncated or corrupt image: {message}") from exc
        raise _RowFailed(f"{what} is not a decodable image: {message}") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    if not image_format:
        raise _RowFailed(f"{what}: PIL could not tell the image format")
    return image_format


# ----------------------------------------------------------------------------------- files on disk


def _scan_images(out_dir: Path) -> dict[str, list[str]]:
    """Map each image stem under ``out_dir/images`` to its file names (relative, POSIX).

    Also removes temporary files a hard kill (power loss, SIGKILL) may have left behind.
    """
    found: dict[str, list[str]] = {}
    root = out_dir / IMAGES_DIR
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if not path.is_file():
                continue
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            if "." not in path.name:
                continue
            stem = path.name.rsplit(".", 1)[0]
            found.setdefault(f"{IMAGES_DIR}/{folder.name}/{stem}", []).append(
                f"{IMAGES_DIR}/{folder.name}/{path.name}"
            )
    return found


def _existing_image(out_dir: Path, names: list[str]) -> str | None:
    """The first of ``names`` that decodes; files that do not decode are removed."""
    for name in names:
        path = out_dir / name
        try:
            _decode(path.read_bytes(), name)
        except (_RowFailed, OSError) as exc:
            info(f"[yellow]{name}: removing an unreadable earlier download ({exc})[/yellow]")
            path.unlink(missing_ok=True)
            continue
        return name
    return None


def _record(row: CcubRow, file_name: str) -> CaptionRecord:
    return CaptionRecord(
        file_name=file_name,
        text=row.caption,
        culture=row.country_code,
        category=row.category_code,
        url=row.url,
    )


# -------------------------------------------------------------------------------------- the import


def import_ccub(
    sheet: str | Path,
    out_dir: str | Path,
    *,
    timeout: float = 10,
    retries: int = 3,
    backoff: float = 0.5,
    max_bytes: int = 20 * 2**20,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Download every image of the CCUB ``sheet`` into the dataset folder ``out_dir``.

    Each request has a ``timeout`` (seconds); timeouts, connection errors and 5xx responses
    (also 408/429) are retried up to ``retries`` times, waiting ``backoff * 2**attempt`` seconds;
    other 4xx responses fail at once. A body above ``max_bytes``, a Content-Type other than
    ``image/*`` and bytes PIL cannot fully decode fail the row. Images are stored exactly as
    downloaded. Rows whose image is already on disk (and decodes) are skipped without a request.

    At the end ``metadata.jsonl`` is rewritten from every imported row (earlier runs included) in
    sheet order, and ``import_report.json`` lists the failed rows. ``on_progress(done, total)`` is
    called after each row. On ``KeyboardInterrupt`` both files are written for what is on disk
    (the report says ``"complete": false``) and the interrupt is re-raised; run again to resume.

    Raises :class:`EquigenError` if the sheet is missing or invalid (before any download).
    """
    sheet = Path(sheet)
    out_dir = Path(out_dir)
    rows = read_ccub_sheet(sheet)
    if max_bytes <= 0:
        raise EquigenError(f"max_bytes must be positive, got {max_bytes}")
    if timeout <= 0:
        raise EquigenError(f"timeout must be positive, got {timeout}")
    out_dir.mkdir(parents=True, exist_ok=True)
    on_disk = _scan_images(out_dir)

    report = ImportReport()
    imported: dict[int, str] = {}  # sheet row -> file name
    verified: dict[str, str] = {}  # stem -> file name, checked or written by this run
    failed_stems: dict[str, ImportFailure] = {}  # a repeated URL is not fetched twice
    done = 0

    def process(row: CcubRow) -> None:
        stem = row.stem
        if stem in verified:
            imported[row.row] = verified[stem]
            report.skipped_existing += 1
            return
        if stem in failed_stems:
            first = failed_stems[stem]
            report.failed.append(
                ImportFailure(row.row, row.url, f"{first.reason} (same URL as row {first.row})")
            )
            return
        existing = _existing_image(out_dir, on_disk.pop(stem, []))
        if existing is not None:
            verified[stem] = imported[row.row] = existing
            report.skipped_existing += 1
            return
        try:
            data, mime = _fetch(row.url, timeout=timeout, retries=retries, backoff=backoff,
                          max_bytes=max_bytes)
            image_format = _decode(data, "the downloaded file", mime)
        except _RowFailed as exc:
            failure = ImportFailure(row.row, row.url, str(exc))
            failed_stems[stem] = failure
            report.failed.append(failure)
            return
        file_name = f"{stem}.{_EXTENSIONS.get(image_format, image_format.lower())}"
        with atomic_path(out_dir / file_name) as tmp:
            tmp.write_bytes(data)
        verified[stem] = imported[row.row] = file_name
        report.downloaded += 1

    progress = track(rows, "Importing CCUB images")
    try:
        for row in progress:
            process(row)
            done += 1
            if on_progress is not None:
                on_progress(done, len(rows))
    except KeyboardInterrupt:
        # Rows not reached yet keep the images earlier runs left (unchecked, as they were).
        for row in rows[done:]:
            if row.row not in imported and on_disk.get(row.stem):
                imported[row.row] = on_disk[row.stem][0]
        _write_outputs(sheet, out_dir, rows, imported, report, complete=False)
        raise
    finally:
        progress.close()

    _write_outputs(sheet, out_dir, rows, imported, report, complete=True)
    return report


def _write_outputs(
    sheet: Path,
    out_dir: Path,
    rows: list[CcubRow],
    imported: dict[int, str],
    report: ImportReport,
    *,
    complete: bool,
) -> None:
    write_records(out_dir, [_record(row, imported[row.row]) for row in rows if row.row in imported])
    write_json_atomic(
        out_dir / REPORT_NAME,
        {
            "sheet": str(sheet),
            "complete": complete,
            "rows": len(rows),
            "downloaded": report.downloaded,
            "skipped_existing": report.skipped_existing,
            "failed_count": len(report.failed),
            "failed": [f._asdict() for f in report.failed],
        },
    )
