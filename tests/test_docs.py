"""The commands in the README and the guide (docs/*.md) work as written.

Every shell command in a ```bash block is extracted. Each `equigen` command (also behind
torchrun / accelerate launch) must parse: the subcommand exists, every option exists and its
value has the right type, every `--set KEY=...` names a key of that command's config, every
configs/... file it names is shipped, and every `make` target exists. Then the mini-world
commands run, in the order the pages give them, in one scratch folder, so each one's output feeds
the next (export -> negatives -> train -> audit -> report ...). They run with the documented
arguments plus options that only shrink the work (fewer images and steps; listed in SHRINK).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from equigen.cli import app
from equigen.config import SHIPPED_CONFIGS

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Options appended (the last value wins) so a documented command runs in seconds.
SHRINK = {
    "world export": ["--n", "10"],
    "audit": ["--n", "1", "--set", "steps=2"],
    "fairmap train": ["--set", "steps=2"],
    "fairmap sweep": ["--n", "2", "--n-fidelity", "1", "--sample-steps", "2", "--set", "steps=2"],
    "scoft negatives": ["--k", "1", "--set", "steps=2"],
    "scoft train": ["--steps", "2", "--set", "batch_size=2", "--set", "contrastive_every=2",
                    "--set", "contrastive_steps=2", "--set", "checkpoint_every=1"],
    "scoft memorization": ["--sample-steps", "2"],
    "synth": ["--m", "2", "--set", "steps=2"],
    "stablerep train": ["--steps", "2", "--set", "captions_per_batch=2",
                        "--set", "images_per_caption=2", "--set", "warmup_steps=1"],
    "stablerep probe": ["--set", "epochs=2", "--set", "lrs=[0.1]"],
    "report": [],
}
# Documented but not run here: they rebuild the shipped mini-world (hours; tests/test_world_train.py
# runs them on small settings in a scratch folder) or are the demo (its own end-to-end test).
NOT_RUN = {"world train-oracle", "world train-base", "world export-base", "demo"}
# Real models on GPUs: these pages' commands are parsed, not run.
REAL_MODEL_PAGES = {"docs/recipes.md"}
# A command elsewhere needs real weights, a GPU or user data when it names any of these.
REAL_WORLD = re.compile(r"stable-diffusion|CompVis/|clip:|/data/|/models/|data/ccub|ccub\.csv"
                        r"|fairface|my-stablerep|labelled-split|HOST:")
CAPTIONS = ["a photo of a doctor from Avel at the market", "a Kethu street",
            "a photo of a farmer at home", "a photo of a teacher from Zuloa"]


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every command line in a bash block, continuations joined."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", page.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#"):
                    found.append((page.relative_to(ROOT).as_posix(), line))
    return found


def equigen_args(command: str) -> list[str] | None:
    """The arguments after `equigen` (direct, .venv/bin/equigen, or `-m equigen` behind a
    launcher), or None when the command is not an equigen one."""
    words = shlex.split(command)
    if words[0].endswith("equigen"):
        return words[1:]
    if words[0] in ("torchrun", "accelerate") and "-m" in words:
        at = words.index("-m")
        return words[at + 2:] if words[at + 1] == "equigen" else None
    return None


def parse(args: list[str]) -> tuple[str, click.Context]:
    """Parse like the CLI does, without running: (command path, context of the leaf command)."""
    command = typer.main.get_command(app)
    ctx = command.make_context("equigen", list(args))
    path = []
    while hasattr(command, "resolve_command"):  # a group (typer ships its own click)
        # a group's parse leaves the subcommand and its arguments in _protected_args + args
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    return " ".join(path), ctx


def config_class(path: str):
    from equigen.audit.run import AuditConfig
    from equigen.data.synth import SynthConfig
    from equigen.methods.fairmap.train import FairMapConfig
    from equigen.methods.scoft import NegativesConfig, ScoftConfig
    from equigen.methods.stablerep.probe import ProbeConfig
    from equigen.methods.stablerep.train import StableRepConfig
    from equigen.world.train_base import BaseTrainConfig

    return {"world train-base": BaseTrainConfig, "audit": AuditConfig, "synth": SynthConfig,
            "fairmap train": FairMapConfig, "fairmap sweep": FairMapConfig, "scoft negatives": NegativesConfig,
            "scoft train": ScoftConfig, "stablerep train": StableRepConfig,
            "stablerep probe": ProbeConfig}.get(path)


def assert_config_key(model, dotted: str, where: str) -> None:
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None:  # a free-form mapping (e.g. backbone_args)
            return
        assert part in fields, f"{where}: --set {dotted}: no key {part!r} in {model.__name__}"
        annotation = fields[part].annotation
        model = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                      if hasattr(a, "model_fields")), dict)


COMMANDS = documented_commands()


def test_the_pages_have_commands():
    assert len(COMMANDS) > 40
    assert {page for page, _ in COMMANDS} >= {"README.md", "docs/scoft.md", "docs/recipes.md"}


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_documented_command_parses(page, command):
    words = shlex.split(command)
    if words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert words[1] in targets, f"{page}: make {words[1]}: no such target"
        return
    for name in re.findall(r"configs/[\w./-]+\.yaml", command):
        assert (SHIPPED_CONFIGS / name.removeprefix("configs/")).is_file(), f"{page}: {name}"
    args = equigen_args(command)
    if args is None:
        assert words[0] == "python" and (ROOT / words[1]).is_file(), f"{page}: {command}"
        return
    if "--help" in args:
        assert CliRunner().invoke(app, args).exit_code == 0, f"{page}: {command}"
        return
    path, ctx = parse(args)
    assert path, f"{page}: {command}: names no command"
    model = config_class(path)
    for override in ctx.params.get("set_") or []:
        key = override.partition("=")[0]
        assert model is not None, f"{page}: {path} takes no --set"
        assert_config_key(model, key, f"{page}: {command}")


@pytest.mark.timeout(900)  # every page's workflow end to end: ~3 min on an idle 2-core machine
def test_documented_mini_world_commands_run(tmp_path, monkeypatch):
    """The mini-world commands of every page, in page order, in one scratch folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "captions.txt").write_text("\n".join(CAPTIONS) + "\n")
    runner = CliRunner()
    ran = set()
    for page, command in COMMANDS:
        args = equigen_args(command)
        if (args is None or page in REAL_MODEL_PAGES or REAL_WORLD.search(command)
                or "--help" in args):
            continue
        path, _ = parse(args)
        if path in NOT_RUN:
            continue
        assert path in SHRINK, f"{page}: {command}: add how to shrink '{path}' to SHRINK"
        result = runner.invoke(app, [*args, *SHRINK[path]])
        assert result.exit_code == 0, f"{page}: {command}\n{result.output}\n{result.exception!r}"
        ran.add(path)
    assert ran == set(SHRINK), f"documented but never run: {set(SHRINK) - ran}"
    assert (tmp_path / "runs" / "scoft" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "runs" / "audit-scoft" / "report.html").is_file()
    assert (tmp_path / "scoft-vs-base.html").is_file()
    assert list((tmp_path / "runs" / "synth").glob("shard-*.tar"))
