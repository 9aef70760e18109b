"""The CCUB importer against a local HTTP server that serves good and bad images."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from equigen.data.captioned import load_records
from equigen.data.ccub import REPORT_NAME, import_ccub, read_ccub_sheet
from equigen.errors import EquigenError

TIMEOUT = 0.5
MAX_BYTES = 20_000
FAST = {"timeout": TIMEOUT, "retries": 1, "backoff": 0.01, "max_bytes": MAX_BYTES}


def _image_bytes(mode: str, fmt: str, size: tuple[int, int] = (24, 16)) -> bytes:
    image = Image.linear_gradient("L").resize(size).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


PNG = _image_bytes("P", "PNG")  # palette mode: not RGB, still accepted
JPEG = _image_bytes("RGB", "JPEG")
BIG_JPEG = _image_bytes("RGB", "JPEG", (200, 200))
HTML = b"<!DOCTYPE html><html><body>Sorry, this image was removed.</body></html>"


class Server:
    """A local image host; ``counts`` says how often each path was requested."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                with server._lock:
                    server.counts[self.path] += 1
                    count = server.counts[self.path]
                try:
                    server.respond(self, self.path, count)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return self.base + path

    def respond(self, handler: BaseHTTPRequestHandler, path: str, count: int) -> None:
        def send(status: int, body: bytes, ctype: str | None, length: bool = True) -> None:
            handler.send_response(status)
            if ctype:
                handler.send_header("Content-Type", ctype)
            if length:
                handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        if path == "/good.png":
            send(200, PNG, "image/png")
        elif path == "/good.jpg":
            send(200, JPEG, "image/jpeg; charset=binary")
        elif path == "/missing.jpg":
            send(404, b"not found", "text/plain")
        elif path == "/truncated.jpg":
            send(200, BIG_JPEG[: len(BIG_JPEG) // 2], "image/jpeg")
        elif path == "/truncated.png":
            send(200, PNG[: len(PNG) - 30], "image/png")
        elif path == "/slow.jpg":
            self.stop.wait(TIMEOUT * 6)
            send(200, JPEG, "image/jpeg")
        elif path == "/html-as-image.jpg":
            send(200, HTML, "image/jpeg")
        elif path == "/page.html":
            send(200, HTML, "text/html; charset=utf-8")
        elif path == "/huge-declared.png":
            send(200, b"\x89PNG" + b"\0" * (MAX_BYTES * 3), "image/png")
        elif path == "/huge-streamed.png":  # no Content-Length: the cap must stop the reading
            send(200, b"\x89PNG" + b"\0" * (MAX_BYTES * 3), "image/png", length=False)
        elif path == "/flaky.png":  # 503 once, then fine
            if count == 1:
                send(503, b"busy", "text/plain")
            else:
                send(200, PNG, "image/png")
        elif path == "/down.png":
            send(503, b"busy", "text/plain")
        else:
            send(404, b"no such path", "text/plain")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    srv = Server()
    srv.thread.start()
    yield srv
    srv.stop.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()


def write_sheet(path: Path, rows: list[tuple[str, str, str, str]], header=None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or ["country_code", "category_code", "url", "caption"])
        writer.writerows(rows)
    return path


def expected_name(country: str, category: str, url: str, ext: str) -> str:
    return f"images/{country}/{category}_{hashlib.sha1(url.encode()).hexdigest()[:12]}.{ext}"


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


GOOD = [
    ("KOR", "food", "/good.png", "A bowl of bibimbap"),
    ("NGA", "clothing", "/good.jpg", "A person wearing an agbada, with a cap"),
    ("CHN", "architecture", "/flaky.png", "A courtyard house in Beijing"),
]
BAD = {
    "/missing.jpg": "404",
    "/truncated.jpg": "truncated",
    "/truncated.png": "truncated",
    "/slow.jpg": "timed out",
    "/html-as-image.jpg": "HTML/XML text, not an image (served as Content-Type image/jpeg",
    "/page.html": "Content-Type is 'text/html'",
    "/huge-declared.png": "Content-Length 60004 bytes is above the max_bytes",
    "/huge-streamed.png": "max_bytes cap of 20000 bytes (stopped reading)",
    "/down.png": "503",
}


def full_sheet(tmp_path: Path, server: Server) -> Path:
    rows = [(c, k, server.url(p), t) for c, k, p, t in GOOD]
    rows += [("IND", "misc", server.url(p), f"bad {p}") for p in BAD]
    return write_sheet(tmp_path / "ccub.csv", rows)


def test_import_good_and_bad(tmp_path: Path, server: Server) -> None:
    sheet = full_sheet(tmp_path, server)
    out = tmp_path / "ccub"
    report = import_ccub(sheet, out, **FAST)

    assert report.downloaded == 3 and report.skipped_existing == 0
    assert len(report.failed) == len(BAD)

    records = load_records(out)
    assert [r.text for r in records] == [t for *_, t in GOOD]
    for record, (country, category, path, _caption) in zip(records, GOOD):
        url = server.url(path)
        ext = "jpg" if path.endswith(".jpg") else "png"
        assert record.file_name == expected_name(country, category, url, ext)
        assert record.culture == country and record.category == category
        assert record.attributes["url"] == url
    # Bytes are stored as downloaded, the palette PNG included (no conversion, no re-encode).
    assert (out / records[0].file_name).read_bytes() == PNG
    assert (out / records[1].file_name).read_bytes() == JPEG
    assert Image.open(out / records[0].file_name).mode == "P"

    by_url = {f.url: f for f in report.failed}
    for path, word in BAD.items():
        failure = by_url[server.url(path)]
        assert word.lower() in failure.reason.lower(), (path, failure.reason)
    assert by_url[server.url("/missing.jpg")].row == 2 + len(GOOD)  # header is row 1

    # Retries: 5xx and timeouts are retried (retries=1: two attempts), 404 is not.
    assert server.counts["/flaky.png"] == 2
    assert server.counts["/down.png"] == 2
    assert server.counts["/slow.jpg"] == 2
    assert server.counts["/missing.jpg"] == 1
    assert "2 attempts" in by_url[server.url("/down.png")].reason

    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved["complete"] is True and saved["downloaded"] == 3
    assert {(f["row"], f["url"], f["reason"]) for f in saved["failed"]} == {
        tuple(f) for f in report.failed
    }
    assert leftovers(out) == []
    assert sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*.*")) == sorted(
        r.file_name for r in records
    )


def test_rerun_makes_no_request_for_downloaded_rows(tmp_path: Path, server: Server) -> None:
    rows = [(c, k, server.url(p), t) for c, k, p, t in GOOD]
    rows.append(("IND", "misc", server.url("/missing.jpg"), "gone"))
    sheet = write_sheet(tmp_path / "ccub.csv", rows)
    out = tmp_path / "ccub"
    first = import_ccub(sheet, out, **FAST)
    assert first.downloaded == 3 and len(first.failed) == 1
    metadata = (out / "metadata.jsonl").read_text()
    before = Counter(server.counts)

    second = import_ccub(sheet, out, **FAST)
    assert second.downloaded == 0 and second.skipped_existing == 3 and len(second.failed) == 1
    for _c, _k, path, _t in GOOD:
        assert server.counts[path] == before[path], path
    assert server.counts["/missing.jpg"] == before["/missing.jpg"] + 1  # failures are retried
    assert (out / "metadata.jsonl").read_text() == metadata


def test_corrupt_existing_file_is_downloaded_again(tmp_path: Path, server: Server) -> None:
    sheet = write_sheet(tmp_path / "ccub.csv", [("KOR", "food", server.url("/good.png"), "x")])
    out = tmp_path / "ccub"
    import_ccub(sheet, out, **FAST)
    (image,) = (out / "images").rglob("*.png")
    image.write_bytes(PNG[:20])
    report = import_ccub(sheet, out, **FAST)
    assert report.downloaded == 1 and server.counts["/good.png"] == 2
    assert image.read_bytes() == PNG


def test_interrupted_run_resumes(tmp_path: Path, server: Server) -> None:
    sheet = full_sheet(tmp_path, server)
    out = tmp_path / "ccub"

    def stop_after_first(done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_ccub(sheet, out, on_progress=stop_after_first, **FAST)
    assert leftovers(out) == []
    assert len(list((out / "images").rglob("*.*"))) == 1
    assert json.loads((out / REPORT_NAME).read_text())["complete"] is False
    assert [r.text for r in load_records(out)] == [GOOD[0][3]]

    seen: list[tuple[int, int]] = []
    report = import_ccub(sheet, out, on_progress=lambda d, t: seen.append((d, t)), **FAST)
    total = len(GOOD) + len(BAD)
    assert seen == [(i, total) for i in range(1, total + 1)]
    assert report.skipped_existing == 1 and report.downloaded == 2
    assert len(report.failed) == len(BAD)
    assert server.counts["/good.png"] == 1
    assert [r.text for r in load_records(out)] == [t for *_, t in GOOD]
    assert json.loads((out / REPORT_NAME).read_text())["complete"] is True
    assert leftovers(out) == []


def test_interrupt_while_writing_leaves_no_partial_file(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [(c, k, server.url(p), t) for c, k, p, t in GOOD]
    sheet = write_sheet(tmp_path / "ccub.csv", rows)
    out = tmp_path / "ccub"
    real_write_bytes = Path.write_bytes

    def half_then_interrupt(self: Path, data: bytes) -> int:
        real_write_bytes(self, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        import_ccub(sheet, out, **FAST)
    monkeypatch.undo()
    assert not (out / "images").exists() or not any((out / "images").rglob("*.*"))
    assert leftovers(out) == []
    assert import_ccub(sheet, out, **FAST).downloaded == len(GOOD)
    assert (out / load_records(out)[0].file_name).read_bytes() == PNG


def test_interrupt_keeps_rows_of_earlier_runs(tmp_path: Path, server: Server) -> None:
    rows = [(c, k, server.url(p), t) for c, k, p, t in GOOD]
    sheet = write_sheet(tmp_path / "ccub.csv", rows)
    out = tmp_path / "ccub"
    import_ccub(sheet, out, **FAST)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_ccub(sheet, out, on_progress=interrupt, **FAST)
    assert len(load_records(out)) == len(GOOD)


def test_duplicate_url_is_fetched_once(tmp_path: Path, server: Server) -> None:
    url = server.url("/good.jpg")
    sheet = write_sheet(
        tmp_path / "ccub.csv", [("NGA", "food", url, "first"), ("NGA", "food", url, "second")]
    )
    report = import_ccub(sheet, tmp_path / "out", **FAST)
    assert report.downloaded == 1 and report.skipped_existing == 1
    assert server.counts["/good.jpg"] == 1
    assert [r.text for r in load_records(tmp_path / "out")] == ["first", "second"]


# ---------------------------------------------------------------------------- sheet validation


def test_missing_sheet(tmp_path: Path) -> None:
    with pytest.raises(EquigenError, match="not found"):
        import_ccub(tmp_path / "nope.csv", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_misnamed_column_is_named(tmp_path: Path) -> None:
    sheet = write_sheet(
        tmp_path / "s.csv",
        [("KOR", "food", "http://x/a.png", "cap")],
        header=["country_code", "category_code", "image_url", "caption"],
    )
    with pytest.raises(EquigenError) as info:
        import_ccub(sheet, tmp_path / "out")
    message = str(info.value)
    assert "'url'" in message and "image_url" in message
    assert "country_code, category_code, url, caption" in message


@pytest.mark.parametrize(
    ("row", "words"),
    [
        (("KOR", "food", "", "a caption"), ["row 3", "url"]),
        (("KOR", "food", "http://x/a.png", "  "), ["row 3", "caption"]),
        (("", "food", "http://x/a.png", "cap"), ["row 3", "country_code"]),
    ],
)
def test_empty_cells_name_the_row(tmp_path: Path, row, words) -> None:
    sheet = write_sheet(tmp_path / "s.csv", [("KOR", "food", "http://x/a.png", "ok"), row])
    with pytest.raises(EquigenError) as info:
        read_ccub_sheet(sheet)
    for word in words:
        assert word in str(info.value)


def test_empty_and_header_only_sheets(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(EquigenError, match="empty"):
        read_ccub_sheet(tmp_path / "empty.csv")
    with pytest.raises(EquigenError, match="no rows"):
        read_ccub_sheet(write_sheet(tmp_path / "h.csv", []))


def test_extra_fields_in_a_row(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text(
        "country_code,category_code,url,caption\nKOR,food,http://x/a.png,rice, with kimchi\n"
    )
    with pytest.raises(EquigenError, match="row 2: 5 fields"):
        read_ccub_sheet(tmp_path / "s.csv")


def test_header_case_bom_and_unsupported_scheme(tmp_path: Path) -> None:
    # Excel-style BOM and capitalised header are accepted; a non-http URL fails its row only.
    (tmp_path / "s.csv").write_text(
        "\ufeffCountry_Code, Category_Code ,URL,Caption,notes\nKOR,food,file:///etc/passwd,cap,x\n",
        encoding="utf-8",
    )
    report = import_ccub(tmp_path / "s.csv", tmp_path / "out", **FAST)
    assert report.downloaded == 0
    ((row, url, reason),) = report.failed
    assert row == 2 and url == "file:///etc/passwd" and "scheme" in reason
    assert load_records(tmp_path / "out") == []


def test_cli_import_then_check(tmp_path: Path, server: Server, capsys) -> None:
    from equigen.cli import main

    rows = [(c, k, server.url(p), t) for c, k, p, t in GOOD]
    rows.append(("IND", "misc", server.url("/missing.jpg"), "gone"))
    sheet = write_sheet(tmp_path / "ccub.csv", rows)
    out = tmp_path / "ccub"
    with pytest.raises(SystemExit) as exit_:
        main(["--quiet", "data", "import-ccub", str(sheet), "--out", str(out),
              "--set", "retries=1", "--set", "backoff=0.01", "--set", "timeout=2"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "3 downloaded, 0 already present, 1 failed" in printed and "404" in printed
    with pytest.raises(SystemExit) as exit_:
        main(["--quiet", "data", "check", str(out)])
    assert exit_.value.code == 0
