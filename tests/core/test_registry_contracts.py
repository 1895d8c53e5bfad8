"""``check_component``: a component that cannot fill its slot is refused by name."""

from __future__ import annotations

from typing import Any

import pytest
from themis.core._contracts import check_component
from themis.core.errors import ComponentContractError


class Identity:
    component_id = "tests/thing"
    version = "1"

    def fingerprint(self) -> str:
        return "f"


def make(*methods: str, **attributes: Any) -> object:
    """An instance of a fresh class with the identity triple, ``methods`` and ``attributes``."""
    namespace: dict[str, Any] = {name: (lambda self, *a, **k: None) for name in methods}
    namespace.update(attributes)
    return type("Made", (Identity,), namespace)()


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        ("generator", "generate"),
        ("selector", "select"),
        ("reducer", "reduce"),
        ("parser", "parse"),
        ("judge_model", "judge"),
    ],
)
def test_each_kind_needs_its_protocol_method(kind: str, method: str) -> None:
    check_component(make(method), kind, "slot")
    with pytest.raises(ComponentContractError, match=f"it has no method {method}\\(\\)"):
        check_component(make(), kind, "generation.generator")


def test_metric_needs_score_or_build_workflow() -> None:
    check_component(make("score"), "metric", "metrics[0]")
    check_component(make("build_workflow"), "metric", "metrics[0]")
    with pytest.raises(ComponentContractError, match=r"^metrics\[2\]: .* is not a metric"):
        check_component(make("parse"), "metric", "metrics[2]")


@pytest.mark.parametrize(
    ("attributes", "missing"),
    [
        ({"component_id": ""}, "has no component_id"),
        ({"component_id": 3}, "has no component_id"),
        ({"version": 1}, "has no version"),
        ({"fingerprint": 5}, "has no fingerprint"),
    ],
)
def test_identity_triple_is_required(attributes: dict[str, Any], missing: str) -> None:
    with pytest.raises(ComponentContractError, match=f"^parsers\\[0\\]: .*{missing}"):
        check_component(make("parse", **attributes), "parser", "parsers[0]")


def test_fingerprint_may_be_a_plain_string() -> None:
    check_component(make("parse", fingerprint="abc"), "parser", "parsers[0]")


def test_a_class_instead_of_an_instance_is_named() -> None:
    with pytest.raises(
        ComponentContractError, match=r"is a class, not an instance; pass Identity\(\)"
    ):
        check_component(Identity, "parser", "parsers[0]")


def test_runtime_kinds_do_not_need_the_identity_triple() -> None:
    class Tracer:
        def start_span(self, name: str, attributes: dict[str, object]) -> object:
            return name

        def end_span(self, span: object, status: str) -> None:
            return None

    check_component(Tracer(), "tracing_provider", "tracing_provider")
    with pytest.raises(ComponentContractError, match="no method end_span"):
        check_component(type("T", (), {"start_span": lambda s, n, a: n})(), "tracing_provider", "t")


def test_store_needs_every_run_store_method() -> None:
    methods = [
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
    ]
    check_component(type("S", (), {m: lambda self: None for m in methods})(), "store", "store")
    partial = type("S", (), {m: lambda self: None for m in methods if m != "clear_run"})()
    with pytest.raises(ComponentContractError, match="no method clear_run"):
        check_component(partial, "store", "store")


def test_subscriber_needs_at_least_one_hook() -> None:
    check_component(type("Sub", (), {"on_event": lambda self, e: None})(), "subscriber", "s[0]")
    with pytest.raises(ComponentContractError, match="defines none of the lifecycle hooks"):
        check_component(object(), "subscriber", "subscribers[0]")


def test_report_format_needs_render_and_its_attributes() -> None:
    fmt = type(
        "F",
        (),
        {
            "render": lambda self, p: "",
            "format_id": "x",
            "media_type": "text/x",
            "file_extension": "x",
        },
    )
    check_component(fmt(), "report_format", "format")
    with pytest.raises(ComponentContractError, match="media_type must be a str"):
        check_component(
            type("G", (), {"render": lambda self, p: "", "format_id": "x"})(), "report_format", "f"
        )


def test_unknown_kind_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown component kind 'scorer'"):
        check_component(make("score"), "scorer", "slot")
