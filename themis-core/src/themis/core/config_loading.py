"""Load an ``Experiment`` from a YAML or TOML file, with overrides and interpolation."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from themis.core.errors import ConfigError

if TYPE_CHECKING:
    from themis.core.experiment import Experiment

__all__ = ["apply_overrides", "load_experiment_config", "load_raw_config"]

_REF = re.compile(r"\$\{([^}]+)\}")
_UPPER = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_PATH_FIELDS = (
    ("storage", "parameters", "path"),
    ("storage", "parameters", "root"),
    ("storage", "parameters", "blob_root"),
    ("runtime", "queue_root"),
    ("runtime", "batch_root"),
)


def load_raw_config(path: str | Path) -> dict[str, Any]:
    """Parse the file into a mapping (no interpolation, no validation)."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise ValueError(
            f"{file}: unsupported config format {suffix or '(none)'}; use .yaml, .yml or .toml"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: cannot parse the config: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _split_key(key: str) -> list[str]:
    return [part for part in key.strip().split(".") if part]


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides; each value is parsed as YAML."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.path=value")
        key, raw = override.split("=", 1)
        parts = _split_key(key)
        if not parts:
            raise ConfigError(f"override {override!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {override!r}: value is not valid YAML ({exc})") from exc
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, create=True, where=".".join(parts[: i + 1]))
        _assign(node, parts[-1], value, where=key)
    return data


def _child(node: Any, part: str, *, create: bool, where: str) -> Any:
    if isinstance(node, list):
        index = _index(part, node, where)
        return node[index]
    if not isinstance(node, dict):
        raise ConfigError(f"override path {where!r} goes through a non-mapping value")
    if part not in node or node[part] is None:
        if not create:
            raise KeyError(part)
        node[part] = {}
    return node[part]


def _assign(node: Any, part: str, value: Any, *, where: str) -> None:
    if isinstance(node, list):
        node[_index(part, node, where)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"override path {where!r} goes through a non-mapping value")


def _index(part: str, node: list[Any], where: str) -> int:
    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"override path {where!r}: {part!r} is not a list index") from None
    if not -len(node) <= index < len(node):
        raise ConfigError(f"override path {where!r}: index {index} is out of range")
    return index


def _lookup(root: dict[str, Any], dotted: str) -> Any:
    node: Any = root
    for part in _split_key(dotted):
        node = _child(node, part, create=False, where=dotted)
    return node


def _interpolate(value: Any, root: dict[str, Any], file: Path, depth: int = 0) -> Any:
    if depth > 16:
        raise ConfigError(f"{file}: interpolation is nested too deeply (a reference cycle?)")
    if isinstance(value, dict):
        return {k: _interpolate(v, root, file, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, root, file, depth) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def resolve(expr: str) -> tuple[bool, Any]:
        expr = expr.strip()
        if expr.startswith("oc.env:"):
            name, _, default = expr[len("oc.env:") :].partition(",")
            found = os.environ.get(name.strip())
            if found is not None:
                return True, found
            if default:
                return True, default.strip()
            raise ConfigError(
                f"{file}: environment variable {name.strip()!r} is not set and "
                "the reference gives no default (${oc.env:NAME,default})"
            )
        try:
            return True, _interpolate(_lookup(root, expr), root, file, depth + 1)
        except (KeyError, ConfigError):
            if _UPPER.match(expr):
                return False, None  # a secret reference such as ${API_KEY} stays literal
            raise ConfigError(f"{file}: ${{{expr}}} names no key of this file") from None

    whole = _REF.fullmatch(value)
    if whole:
        found, resolved = resolve(whole.group(1))
        return resolved if found else value

    def substitute(match: re.Match[str]) -> str:
        found, resolved = resolve(match.group(1))
        return str(resolved) if found else match.group(0)

    return _REF.sub(substitute, value)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and value != ":memory:":
            path = Path(value).expanduser()
            return str(path if path.is_absolute() else (base / path))
        return value

    for fields in _PATH_FIELDS:
        node: Any = data
        for part in fields[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and fields[-1] in node:
            node[fields[-1]] = absolute(node[fields[-1]])
    for dataset in data.get("datasets") or []:
        if isinstance(dataset, dict) and "path" in dataset:
            dataset["path"] = absolute(dataset["path"])


def load_experiment_config(
    path: str | Path, *, overrides: Sequence[str] | None = None
) -> Experiment:
    """Read, override, interpolate, resolve relative paths and validate an experiment."""
    from themis.core.experiment import Experiment

    file = Path(path)
    data = apply_overrides(load_raw_config(file), list(overrides or []))
    data = _interpolate(data, data, file)
    _resolve_paths(data, file.resolve().parent)
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{file}: invalid experiment config: {problems}") from exc
