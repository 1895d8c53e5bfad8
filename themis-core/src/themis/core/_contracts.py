"""Structural checks that a resolved component can fill the slot it was given to."""

from __future__ import annotations

from themis.core.errors import ComponentContractError

__all__ = ["IDENTITY_KINDS", "REQUIRED_METHODS", "check_component"]

# Components of these kinds are hashed into the run's identity, so they need the triple.
# Stores, tracing providers, subscribers and report formats are runtime-only observers
# or outputs (provenance, never identity), so the triple is not asked of them.
IDENTITY_KINDS = frozenset({"generator", "selector", "reducer", "parser", "metric", "judge_model"})

# Every method listed must exist. For ``metric`` one of the two suffices (pure vs workflow).
REQUIRED_METHODS: dict[str, tuple[str, ...]] = {
    "generator": ("generate",),
    "selector": ("select",),
    "reducer": ("reduce",),
    "parser": ("parse",),
    "judge_model": ("judge",),
    "tracing_provider": ("start_span", "end_span"),
    "store": (
        "initialize",
        "close",
        "persist_snapshot",
        "load_snapshot",
        "list_runs",
        "append_events",
        "query_events",
        "get_projection",
        "resume",
        "store_blob",
        "load_blob",
        "load_stage_cache",
        "store_stage_cache",
        "clear_run",
    ),
    "report_format": ("render",),
}

_METRIC_METHODS = ("score", "build_workflow")

_SUBSCRIBER_HOOKS = (
    "before_run",
    "after_run",
    "before_generate",
    "after_generate",
    "before_select",
    "after_select",
    "before_reduce",
    "after_reduce",
    "before_parse",
    "after_parse",
    "before_score",
    "after_score",
    "before_judge",
    "after_judge",
    "on_event",
)

_REPORT_FORMAT_ATTRIBUTES = ("format_id", "media_type", "file_extension")

_KNOWN_KINDS = IDENTITY_KINDS | REQUIRED_METHODS.keys() | {"subscriber"}


def check_component(obj: object, kind: str, slot: str) -> None:
    """Raise ``ComponentContractError`` naming ``slot`` and the first member ``obj`` lacks."""
    kind = str(kind)
    if kind not in _KNOWN_KINDS:
        raise ValueError(f"unknown component kind {kind!r}; expected one of {sorted(_KNOWN_KINDS)}")
    label = f"{slot}: {_describe(obj)}"
    if isinstance(obj, type):
        # A class passed where an instance belongs has unbound methods, which would fail
        # much later (fingerprint() missing self); say so now.
        raise ComponentContractError(
            f"{label} is a class, not an instance; pass {obj.__name__}() "
            f"or the import path '{obj.__module__}:{obj.__qualname__}'"
        )
    if kind in IDENTITY_KINDS:
        _check_identity(obj, label)
    if kind == "metric":
        if not any(_is_method(obj, name) for name in _METRIC_METHODS):
            raise ComponentContractError(
                f"{label} is not a metric: it needs score(parsed, case, ctx) (a pure metric) "
                "or build_workflow(subject, ctx) (a workflow metric)"
            )
        return
    if kind == "subscriber":
        if not any(_is_method(obj, name) for name in _SUBSCRIBER_HOOKS):
            raise ComponentContractError(
                f"{label} is not a subscriber: it defines none of the lifecycle hooks "
                f"({', '.join(_SUBSCRIBER_HOOKS)})"
            )
        return
    for name in REQUIRED_METHODS.get(kind, ()):
        if not _is_method(obj, name):
            raise ComponentContractError(
                f"{label} cannot be used as a {kind}: it has no method {name}()"
            )
    if kind == "report_format":
        for name in _REPORT_FORMAT_ATTRIBUTES:
            if not isinstance(getattr(obj, name, None), str):
                raise ComponentContractError(
                    f"{label} cannot be used as a report_format: {name} must be a str"
                )


def _check_identity(obj: object, label: str) -> None:
    component_id = getattr(obj, "component_id", None)
    if not isinstance(component_id, str) or not component_id:
        raise ComponentContractError(
            f"{label} has no component_id: set a non-empty str attribute component_id "
            "(a registry id such as 'acme/rubric' for a plugin component)"
        )
    if not isinstance(getattr(obj, "version", None), str):
        raise ComponentContractError(
            f"{label} ({component_id}) has no version: set a str attribute version "
            "and bump it when behaviour changes"
        )
    fingerprint = getattr(obj, "fingerprint", None)
    if not (callable(fingerprint) or isinstance(fingerprint, str)):
        raise ComponentContractError(
            f"{label} ({component_id}) has no fingerprint(): define a zero-argument method "
            "fingerprint() -> str covering its behaviour-changing parameters "
            "(themis.core.base.content_hash(params) is the usual helper)"
        )


def _is_method(obj: object, name: str) -> bool:
    return callable(getattr(obj, name, None))


def _describe(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"
