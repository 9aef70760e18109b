"""One config system for every command: YAML validated by pydantic, plus ``--set a.b=value``.

A command declares its config as a :class:`StrictModel`; :func:`load_config` reads the YAML file,
applies overrides and validates, turning any pydantic error into one :class:`EquigenError` that
names the file (or the ``--set`` flag), the key, the value and the expected type.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from equigen.errors import EquigenError


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


M = TypeVar("M", bound=BaseModel)


SHIPPED_CONFIGS = Path(__file__).parent / "configs"  # also reachable as ./configs in a checkout


def resolve_config_path(path: str | Path) -> Path:
    """``path`` if it is a file; else a relative ``configs/...`` path is looked up among the
    configs shipped inside the package, so the documented commands work from any folder."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_absolute() and path.parts[:1] == ("configs",):
        shipped = SHIPPED_CONFIGS.joinpath(*path.parts[1:])
        if shipped.is_file():
            return shipped
    shipped_names = sorted(p.relative_to(SHIPPED_CONFIGS).as_posix()
                           for p in SHIPPED_CONFIGS.rglob("*.yaml"))
    raise EquigenError(f"config file not found: {path} (shipped with equigen, usable as "
                       f"configs/NAME from any folder: {', '.join(shipped_names)})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing file, bad syntax or a non-mapping."""
    path = resolve_config_path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise EquigenError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EquigenError(f"{path}: expected a mapping of keys at the top, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 3e-4). The value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise EquigenError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. train.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(path[: i + 1])
            raise EquigenError(f"--set {'.'.join(path)}: '{where}' is a value, not a section")
        node = child
    node[path[-1]] = value


def load_config(
    model: type[M],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    values: dict[str, Any] | None = None,
) -> M:
    """Build a validated config: model defaults < YAML file < ``values`` < ``--set`` overrides.

    ``values`` maps dotted keys to values given by dedicated CLI flags (``None`` means not given).
    """
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    overridden: set[tuple[str, ...]] = set()
    for dotted, value in (values or {}).items():
        if value is not None:
            apply_override(data, dotted.split("."), value)
            overridden.add(tuple(dotted.split(".")))
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
        overridden.add(tuple(keys))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        source = str(path) if path is not None else "config"
        raise EquigenError(format_validation_error(exc, model, source, overridden)) from exc


def format_validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    source: str,
    overridden: set[tuple[str, ...]] = frozenset(),  # type: ignore[assignment]
) -> str:
    """One line per problem: where it came from, the dotted key, what was wrong, what is valid."""
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc)
        origin = f"--set {key}" if loc in overridden else source
        if err["type"] == "extra_forbidden":
            valid = ", ".join(sorted(_fields_at(model, loc[:-1]))) or "none"
            lines.append(f"{origin}: unknown key '{key}' (valid keys here: {valid})")
        elif err["type"] == "missing":
            lines.append(f"{origin}: missing required key '{key}' ({_expected(model, loc)})")
        else:
            lines.append(
                f"{origin}: key '{key}' = {err.get('input')!r}: {err['msg']} "
                f"(expected {_expected(model, loc)})"
            )
    return "invalid config:\n  " + "\n  ".join(lines) if len(lines) > 1 else "invalid config: " + lines[0]


def _walk(model: type[BaseModel], loc: tuple[str, ...]) -> Any:
    """The annotation at ``loc`` inside ``model`` (list indices and dict keys are stepped over)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        else:
            args = typing.get_args(annotation)
            annotation = args[-1] if args else None
    return annotation


def _unwrap(annotation: Any) -> Any:
    """Optional[X] -> X, so that nested models inside optionals are walked."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _fields_at(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    annotation = _unwrap(_walk(model, loc))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _expected(model: type[BaseModel], loc: tuple[str, ...]) -> str:
    annotation = _walk(model, loc)
    if annotation is None:
        return "a valid value"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"a section with keys: {', '.join(annotation.model_fields)}"
        return f"type {annotation.__name__}"
    return f"type {annotation}".replace("typing.", "")


def dump_config(config: BaseModel) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (what the manifest records)."""
    return config.model_dump(mode="json")
