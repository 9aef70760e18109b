"""The scripts in examples/ run, unchanged, on a tiny model the test builds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def test_audit_your_pipeline(tiny_model, tmp_path):
    result = run_example("audit_your_pipeline.py", "--model", str(tiny_model), "--n", "2",
                         "--steps", "2", "--out", str(tmp_path / "audit"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tone: FD" in result.stdout
    assert (tmp_path / "audit" / "report.html").is_file()
    import json

    manifest = json.loads((tmp_path / "audit" / "manifest.json").read_text())
    assert manifest["config"]["model"].endswith("+ Euler scheduler")


def test_fairmap_and_generate(tiny_model, tmp_path):
    result = run_example("fairmap_and_generate.py", "--model", str(tiny_model), "--steps", "2",
                         "--images", "2", "--generation-steps", "2", "--out", str(tmp_path / "fm"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'a photo of a dark-skinned doctor': the map is skipped (names a group)" in result.stdout
    assert (tmp_path / "fm" / "fairmap.safetensors").is_file()
    assert (tmp_path / "fm" / "before-after.png").is_file()
