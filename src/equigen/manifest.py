"""Run manifests: every run records what produced it, so a result can be traced and repeated."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from equigen import __version__
from equigen.utils.io import write_json_atomic

MANIFEST_NAME = "manifest.json"
# Every package a result can move with: the models' stack, and numpy / pillow (the mini-world's
# renders) and timm / open_clip (StableRep's backbones), whose releases can change a figure.
TRACKED_PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "peft", "accelerate",
                    "numpy", "pillow", "timm", "open_clip_torch")


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported)."""
    versions: dict[str, str | None] = {"equigen": __version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout that holds equigen's source, with ``-dirty`` if it has changes."""
    where = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@contextmanager
def run_manifest(
    out_dir: str | Path,
    command: str,
    config: BaseModel | dict[str, Any] | None = None,
    seed: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Write ``out_dir/manifest.json`` when a run starts and again when it ends.

    The yielded dict may be extended by the run (e.g. ``manifest["results"] = {...}``); it is
    written with ``status`` "finished" on success, "failed" (with the error) on an exception, or
    "interrupted" on Ctrl-C, so a half-done run is recognisable.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    manifest: dict[str, Any] = {
        "command": command,
        "argv": sys.argv,
        "config": resolved,
        "seed": seed,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": {"platform": platform.platform(), "machine": platform.machine()},
        "started": _now(),
        "ended": None,
        "status": "running",
    }
    path = out / MANIFEST_NAME
    write_json_atomic(path, manifest)
    start = time.perf_counter()
    try:
        yield manifest
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    except BaseException as exc:
        manifest["status"] = "failed"
        manifest["error"] = f"{type(exc).__name__}: {exc}"
        raise
    else:
        manifest["status"] = "finished"
    finally:
        manifest["ended"] = _now()
        manifest["duration_s"] = round(time.perf_counter() - start, 3)
        write_json_atomic(path, manifest)
