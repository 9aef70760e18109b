import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from equigen.cli import app, main

GROUPS = ["world", "audit", "fairmap", "scoft", "synth", "stablerep", "report", "data", "demo"]
runner = CliRunner()


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "equigen", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_help_lists_every_group():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in GROUPS:
        assert f" {group} " in result.output, group


@pytest.mark.parametrize("command", [["demo"], ["data", "check"], ["data", "import-ccub"]])
def test_every_command_help_has_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output and "$ equigen" in result.output


def test_reserved_group_fails_with_one_line():
    result = run_cli("audit")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: 'equigen audit' is not available in this version yet (issue #4)"
    ]


def test_errors_are_one_line_unless_debug(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_sise: 3\n")
    plain = run_cli("data", "check", str(tmp_path), "--config", str(bad))
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr
    assert f"{bad}: unknown key 'min_sise' (valid keys here: min_size)" in plain.stderr
    debug = run_cli("--debug", "data", "check", str(tmp_path), "--config", str(bad))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_flag_and_set_override_reach_the_command(tmp_path):
    result = run_cli("data", "check", str(tmp_path), "--set", "min_size=abc")
    assert result.returncode == 1 and "--set min_size" in result.stderr and "'abc'" in result.stderr


def test_demo_runs_end_to_end_and_writes_a_manifest(tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_:
        main(["--quiet", "demo", "--out", str(out), "--set", "images_per_prompt=1",
              "--set", "steps=2"])
    assert exit_.value.code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["config"]["images_per_prompt"] == 1 and manifest["config"]["steps"] == 2
    assert manifest["results"]["images"] == 3 and manifest["results"]["dataset_ok"]
    assert len(list((out / "images").glob("*.png"))) == 3
    assert "wrote 3 images" in capsys.readouterr().out
