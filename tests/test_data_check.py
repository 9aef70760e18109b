import json
import subprocess
import sys

import pytest
from PIL import Image

from equigen.data import load_records, write_records
from equigen.data.check import check_dataset
from equigen.errors import EquigenError


def make_image(path, mode="RGB", size=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=0 if mode in ("L", "1") else None).save(path)


@pytest.fixture
def good(tmp_path):
    root = tmp_path / "good"
    rows = []
    for i in range(3):
        make_image(root / f"images/{i}.png")
        rows.append({"file_name": f"images/{i}.png", "text": f"a photo {i}", "culture": "Avel",
                     "tone": i})
    make_image(root / "negatives/n0.png")
    rows[0]["negatives"] = ["negatives/n0.png"]
    write_records(root, rows)
    return root


def test_good_folder_has_no_problems(good):
    report = check_dataset(good, min_size=32)
    assert report.ok and report.problems == [] and report.rows == 3
    records = load_records(good)
    assert records[0].negatives == ["negatives/n0.png"]
    assert records[2].attributes == {"tone": 2}


def test_every_defect_is_reported_by_name(tmp_path):
    root = tmp_path / "bad"
    make_image(root / "ok.png")
    make_image(root / "cmyk.jpg", mode="CMYK")
    make_image(root / "small.png", size=(8, 8))
    full = root / "full.png"
    make_image(full, size=(64, 64))
    (root / "truncated.png").write_bytes(full.read_bytes()[:-40])
    (root / "fake.jpg").write_text("<html>not an image</html>")
    make_image(root / "stray.png")
    (tmp_path / "outside.png").write_bytes(full.read_bytes())
    lines = [
        {"file_name": "ok.png", "text": "fine"},
        {"file_name": "missing.png", "text": "where is it"},
        {"file_name": "truncated.png", "text": "cut"},
        {"file_name": "fake.jpg", "text": "html"},
        {"file_name": "ok.png", "text": "again"},
        {"file_name": "cmyk.jpg", "text": "   "},
        {"file_name": "../outside.png", "text": "escape"},
        {"file_name": "/etc/passwd", "text": "absolute"},
        {"file_name": "small.png", "text": "tiny", "negatives": ["nope.png"]},
        {"text": "no file name"},
    ]
    text = "".join(json.dumps(row) + "\n" for row in lines) + "{not json\n"
    (root / "metadata.jsonl").write_text(text)

    report = check_dataset(root, min_size=32)
    found = {(p.kind, p.where) for p in report.problems}
    expected = {
        ("missing-image", "metadata.jsonl:2"),
        ("corrupt-image", "metadata.jsonl:3"),
        ("corrupt-image", "metadata.jsonl:4"),
        ("duplicate-file-name", "metadata.jsonl:5"),
        ("empty-caption", "metadata.jsonl:6"),
        ("not-rgb", "metadata.jsonl:6"),
        ("path-escapes", "metadata.jsonl:7"),
        ("path-escapes", "metadata.jsonl:8"),
        ("too-small", "metadata.jsonl:9"),
        ("missing-negative", "metadata.jsonl:9"),
        ("bad-row", "metadata.jsonl:10"),
        ("malformed-json", "metadata.jsonl:11"),
        ("unlisted-image", "stray.png"),
    }
    assert expected <= found, expected - found
    assert not report.ok
    severities = {p.kind: p.severity for p in report.problems}
    assert severities["not-rgb"] == "note" and severities["unlisted-image"] == "note"
    messages = " ".join(p.message for p in report.problems)
    assert "CMYK" in messages and "also on line 1" in messages and "8x8" in messages


def test_missing_metadata_is_an_error(tmp_path):
    report = check_dataset(tmp_path)
    assert [p.kind for p in report.problems] == ["no-metadata"] and not report.ok
    with pytest.raises(EquigenError, match="dataset folder not found"):
        check_dataset(tmp_path / "nope")


def test_load_records_names_the_bad_line(tmp_path):
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\n{oops\n')
    with pytest.raises(EquigenError, match=r"metadata.jsonl:2: malformed JSON"):
        load_records(tmp_path)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "equigen", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_check_exit_codes(good, tmp_path):
    assert run_cli("data", "check", str(good)).returncode == 0
    (good / "metadata.jsonl").write_text('{"file_name": "images/0.png", "text": ""}\n')
    bad = run_cli("data", "check", str(good))
    assert bad.returncode == 1
    assert "empty-caption" in bad.stdout and "unlisted-image" in bad.stdout
