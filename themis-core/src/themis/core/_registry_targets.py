"""Turning registry targets and import paths into component objects; hook-call tracing."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from themis.core._registry_entries import ComponentKind
from themis.core.errors import ConfigError, ThemisError
from themis.core.logs import get_logger

__all__ = [
    "check_params",
    "has_identity",
    "import_object",
    "import_user_path",
    "instantiate",
    "trace_after",
    "trace_before",
]

log = get_logger("themis.core.registry")


def instantiate(target: object, params: dict[str, Any], label: str) -> object:
    """A class or factory called with ``params``; a ready component returned as is."""
    if isinstance(target, type) or (callable(target) and not has_identity(target)):
        check_params(target, params, label)
        return target(**params)
    if has_identity(target):
        if params:
            raise ConfigError(
                f"{label} is a ready-made component instance and takes no params; "
                f"remove {sorted(params)} or point at its class instead"
            )
        return target
    raise ConfigError(
        f"{label} is a {type(target).__name__}, not a class, a factory or a component "
        "(an object with component_id, version and fingerprint)"
    )


def has_identity(value: object) -> bool:
    return all(hasattr(value, name) for name in ("component_id", "version", "fingerprint"))


def check_params(target: Any, params: dict[str, Any], label: str) -> None:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        signature.bind(**params)
    except TypeError as exc:
        accepted = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        raise ConfigError(
            f"{label} cannot be created with params {params!r}: {exc}; "
            f"it accepts: {', '.join(accepted) or 'no parameters'}"
        ) from exc


def import_object(path: str) -> object:
    module_name, _, qualname = path.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def import_user_path(path: str, kind: ComponentKind) -> object:
    try:
        return import_object(path)
    except ThemisError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"cannot import the {kind} `{path}`: {type(exc).__name__}: {exc}; check that "
            "the module is installed (or on sys.path) and that it defines that name"
        ) from exc


def trace_before(hook_name: str, hook_impls: Any, kwargs: Mapping[str, Any]) -> None:
    log.debug(
        "plugin.hook_call",
        hook=hook_name,
        plugins=[impl.plugin_name for impl in hook_impls],
        arguments=sorted(kwargs),
    )


def trace_after(outcome: Any, hook_name: str, hook_impls: Any, kwargs: Mapping[str, Any]) -> None:
    error = outcome.exception
    log.debug(
        "plugin.hook_result",
        hook=hook_name,
        plugins=[impl.plugin_name for impl in hook_impls],
        error=None if error is None else f"{type(error).__name__}: {error}",
    )
