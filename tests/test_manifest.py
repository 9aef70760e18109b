import json

import pytest

from equigen.config import StrictModel
from equigen.manifest import MANIFEST_NAME, run_manifest


class Cfg(StrictModel):
    lr: float = 0.5
    name: str = "x"


def test_manifest_records_config_seed_versions_and_times(tmp_path):
    with run_manifest(tmp_path, "unit", Cfg(), seed=7) as manifest:
        running = json.loads((tmp_path / MANIFEST_NAME).read_text())
        assert running["status"] == "running" and running["ended"] is None
        manifest["results"] = {"answer": 42}
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["command"] == "unit"
    assert data["config"] == {"lr": 0.5, "name": "x"}
    assert data["seed"] == 7
    for package in ("equigen", "torch", "diffusers", "transformers", "numpy", "pillow", "timm"):
        assert data["versions"][package], package
    assert data["started"] <= data["ended"] and data["duration_s"] >= 0
    assert data["status"] == "finished" and data["results"] == {"answer": 42}
    assert "git_commit" in data  # None outside a git checkout, else a 40-hex commit
    if data["git_commit"]:
        assert len(data["git_commit"].removesuffix("-dirty")) == 40


def test_failed_run_is_marked_failed_with_the_error(tmp_path):
    with pytest.raises(RuntimeError):
        with run_manifest(tmp_path, "unit", {"a": 1}, seed=0):
            raise RuntimeError("boom")
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["status"] == "failed" and data["error"] == "RuntimeError: boom"
    assert data["ended"] is not None
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files left behind"
