import subprocess
import sys

import pytest
from typer.testing import CliRunner

from equigen.cli import app

GROUPS = ["world", "audit", "fairmap", "scoft", "synth", "stablerep", "report", "data", "demo",
          "annotators"]
runner = CliRunner()


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "equigen", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_help_lists_every_group():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in GROUPS:
        assert f" {group} " in result.output, group


@pytest.mark.parametrize("command", [["demo"], ["audit"], ["data", "check"], ["data", "import-ccub"],
                                     ["world", "export"], ["world", "train-base"],
                                     ["world", "train-oracle"], ["world", "export-base"],
                                     ["report"], ["annotators", "calibrate"], ["synth"],
                                     ["fairmap", "train"], ["fairmap", "sweep"],
                                     ["stablerep", "train"], ["stablerep", "probe"],
                                     ["scoft", "negatives"], ["scoft", "train"],
                                     ["scoft", "memorization"]])
def test_every_command_help_has_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output and "$ equigen" in result.output


def test_missing_dataset_fails_with_one_line(tmp_path):
    result = run_cli("scoft", "train", "--data", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere' / 'metadata.jsonl'}: not found (a dataset folder needs a "
        "metadata.jsonl)"
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
