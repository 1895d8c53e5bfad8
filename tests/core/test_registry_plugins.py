"""Plugins in-process: namespaces, duplicates, atomic loading, hooks and env settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
import structlog
import themis
from structlog.testing import capture_logs
from themis.core.errors import (
    DuplicateComponentError,
    NamespaceError,
    PluginLoadError,
    UnknownComponentError,
)
from themis.core.registry import ComponentRegistrar, Registry


class Thing:
    component_id = "x/thing"
    version = "1"

    def fingerprint(self) -> str:
        return "thing"

    def parse(self, candidate: object, ctx: object) -> None:
        return None


def plugin_registering(*calls: tuple[Any, ...], **registrations: Any) -> object:
    """A plugin object whose register_components performs ``calls`` on the registrar."""

    class Plugin:
        @themis.hookimpl
        def register_components(self, registry: ComponentRegistrar) -> None:
            for kind, component_id, target, *rest in calls:
                registry.register(kind, component_id, target, **(rest[0] if rest else {}))

    return Plugin()


@pytest.fixture
def registry() -> Registry:
    return Registry(autoload=False, env={})


def test_registrar_namespace_is_the_lower_cased_entry_point_name(registry: Registry) -> None:
    seen: list[str] = []

    class Plugin:
        @themis.hookimpl
        def register_components(self, registry: ComponentRegistrar) -> None:
            seen.append(registry.namespace)
            registry.parser("my_tools/thing", Thing)

    registry.add_plugin(Plugin(), name="My-Tools", distribution="my-tools", version="1.0")
    assert seen == ["my_tools"]
    assert registry.describe("my_tools/thing").plugin == "my_tools"


def test_registrar_shortcuts_fill_in_the_kind(registry: Registry) -> None:
    class Plugin:
        @themis.hookimpl
        def register_components(self, registry: ComponentRegistrar) -> None:
            registry.generator("kinds/g", Thing)
            registry.selector("kinds/s", Thing)
            registry.reducer("kinds/r", Thing)
            registry.parser("kinds/p", Thing)
            registry.metric("kinds/m", Thing)
            registry.judge_model("kinds/j", Thing)
            registry.store("kinds/st", Thing, aliases=["kst"])
            registry.tracing_provider("kinds/t", Thing, aliases=["kt"])
            registry.subscriber("kinds/sub", Thing)
            registry.report_format("kinds/rf", Thing, aliases=["krf"])

    registry.add_plugin(Plugin(), name="kinds")
    kinds = {registry.describe(i).id: str(registry.describe(i).kind) for i in registry.ids()}
    assert kinds["kinds/j"] == "judge_model" and kinds["kinds/rf"] == "report_format"
    assert registry.describe("kst").id == "kinds/st"
    assert len([i for i in kinds if i.startswith("kinds/")]) == 10


def test_registering_outside_the_namespace_raises_namespace_error(registry: Registry) -> None:
    plugin = plugin_registering(("parser", "acme/thing", Thing))
    with pytest.raises(NamespaceError) as info:
        registry.add_plugin(plugin, name="tools", distribution="tools-dist", version="1.2")
    message = str(info.value)
    assert "plugin `tools` (tools-dist 1.2)" in message
    assert "owns the namespace `tools/`" in message
    assert "cannot register `acme/thing`" in message


@pytest.mark.parametrize(
    ("namespace", "owner"),
    [
        ("core", "themis-core"),
        ("builtin", "the distribution themis-builtins"),
        ("local", "in-process registration"),
        ("themis", "future use by Themis"),
    ],
)
def test_reserved_namespaces_cannot_be_claimed(
    registry: Registry, namespace: str, owner: str
) -> None:
    plugin = plugin_registering(("parser", f"{namespace}/thing", Thing))
    with pytest.raises(NamespaceError, match=f"reserved for {owner}"):
        registry.add_plugin(plugin, name=namespace, distribution="someone-else", version="1")


def test_builtin_namespace_belongs_to_themis_builtins(registry: Registry) -> None:
    plugin = plugin_registering(("parser", "builtin/thing", Thing))
    registry.add_plugin(plugin, name="builtin", distribution="Themis_Builtins", version="9")
    assert registry.describe("builtin/thing").distribution == "Themis_Builtins"


def test_local_registration_lives_in_the_local_namespace(registry: Registry) -> None:
    registry.register("parser", "local/thing", Thing, summary="mine")
    info = registry.describe("local/thing")
    assert (info.plugin, info.distribution, info.summary) == ("local", None, "mine")
    assert [p.name for p in registry.plugins()][:2] == ["core", "local"]
    with pytest.raises(NamespaceError, match="owns the namespace `local/`"):
        registry.register("parser", "acme/thing", Thing)


def test_invalid_ids_targets_and_aliases_are_rejected(registry: Registry) -> None:
    with pytest.raises(ValueError, match="invalid component id 'Local/Thing'"):
        registry.register("parser", "Local/Thing", Thing)
    with pytest.raises(ValueError, match="invalid import path"):
        registry.register("parser", "local/a", "not a path")
    with pytest.raises(TypeError, match="not int"):
        registry.register("parser", "local/b", 42)
    with pytest.raises(ValueError, match="aliases are only resolved for the kinds"):
        registry.register("metric", "local/c", Thing, aliases=["c"])
    with pytest.raises(ValueError, match="invalid alias"):
        registry.register("store", "local/d", Thing, aliases=["D/x"])


def test_duplicate_id_names_both_distributions_and_poisons_the_id(registry: Registry) -> None:
    registry.add_plugin(
        plugin_registering(("parser", "dup/thing", Thing)),
        name="dup",
        distribution="first-dist",
        version="1.0",
    )
    with pytest.raises(DuplicateComponentError) as info:
        registry.add_plugin(
            plugin_registering(("parser", "dup/thing", Thing)),
            name="dup",
            distribution="second-dist",
            version="2.0",
        )
    message = str(info.value)
    assert "`dup/thing` is registered by two plugins" in message
    assert "first-dist 1.0" in message and "second-dist 2.0" in message
    # Neither is silently picked: which one won would depend on installation order.
    with pytest.raises(DuplicateComponentError, match=re.escape("first-dist 1.0")):
        registry.create("parser", "dup/thing")
    assert [str(e) for e in registry.duplicates()] == [message]


def test_duplicate_alias_names_both_plugins(registry: Registry) -> None:
    registry.add_plugin(
        plugin_registering(("store", "one/store", Thing, {"aliases": ["shared"]})),
        name="one",
        distribution="one-dist",
        version="1",
    )
    with pytest.raises(DuplicateComponentError, match=r"alias `shared`.*one-dist 1.*two-dist 2"):
        registry.add_plugin(
            plugin_registering(("store", "two/store", Thing, {"aliases": ["shared"]})),
            name="two",
            distribution="two-dist",
            version="2",
        )


def test_same_id_twice_in_one_plugin_is_a_duplicate(registry: Registry) -> None:
    plugin = plugin_registering(("parser", "twice/a", Thing), ("parser", "twice/a", Thing))
    with pytest.raises(DuplicateComponentError, match="registered twice by plugin `twice`"):
        registry.add_plugin(plugin, name="twice", distribution="twice-dist", version="1")


def test_a_failing_plugin_registers_nothing(registry: Registry) -> None:
    plugin = plugin_registering(("parser", "half/ok", Thing), ("parser", "other/bad", Thing))
    with pytest.raises(NamespaceError):
        registry.add_plugin(plugin, name="half", distribution="half-dist", version="1")
    assert "half/ok" not in registry.ids()
    info = next(p for p in registry.plugins() if p.name == "half")
    assert info.status == "failed" and info.error is not None
    assert info.error.startswith("NamespaceError:")


def test_hookimpl_with_a_wrong_signature_fails_validation(registry: Registry) -> None:
    class Plugin:
        @themis.hookimpl
        def register_components(self, registrar: ComponentRegistrar) -> None:
            raise AssertionError("never called")

    with pytest.raises(PluginLoadError, match=r"plugin `wrong` .*PluginValidationError"):
        registry.add_plugin(Plugin(), name="wrong", distribution="wrong-dist", version="1")


def test_plugin_without_register_components_loads_empty(registry: Registry) -> None:
    class Plugin:
        pass

    info = registry.add_plugin(Plugin(), name="empty", distribution="empty-dist", version="1")
    assert info.status == "loaded"
    details = {d.name: d for d in registry.plugin_details()}
    assert details["empty"].components == [] and details["empty"].hooks == []
    assert details["core"].hooks == ["register_components"]


def test_plugin_details_lists_components_and_hooks(registry: Registry) -> None:
    class Plugin:
        @themis.hookimpl
        def register_components(self, registry: ComponentRegistrar) -> None:
            registry.parser("det/p", Thing)

        @themis.hookimpl
        def doctor_checks(self) -> list[Any]:
            return []

    registry.add_plugin(Plugin(), name="det", distribution="det-dist", version="3")
    detail = next(d for d in registry.plugin_details() if d.name == "det")
    assert [c.id for c in detail.components] == ["det/p"]
    assert detail.hooks == ["doctor_checks", "register_components"]
    assert (detail.distribution, detail.version, detail.status) == ("det-dist", "3", "loaded")


def test_env_block_plugins_marks_a_plugin_blocked() -> None:
    registry = Registry(env={"THEMIS_BLOCK_PLUGINS": "acme"})
    statuses = {p.name: p.status for p in registry.plugins()}
    assert statuses["acme"] == "blocked"
    with pytest.raises(UnknownComponentError, match="is blocked: blocked by THEMIS_BLOCK_PLUGINS"):
        registry.create("metric", "acme/rubric")


def test_block_argument_adds_to_the_env_list() -> None:
    registry = Registry(env={"THEMIS_BLOCK_PLUGINS": "sqlite"}, block=["ACME"])
    statuses = {p.name: p.status for p in registry.plugins()}
    assert statuses["acme"] == statuses["sqlite"] == "blocked"
    assert statuses["builtin"] == "loaded"


def test_env_load_plugins_allow_lists() -> None:
    registry = Registry(env={"THEMIS_LOAD_PLUGINS": "acme,sqlite"})
    statuses = {p.name: p.status for p in registry.plugins()}
    assert statuses["acme"] == statuses["sqlite"] == "loaded"
    assert statuses["builtin"] == "disabled"
    assert "builtin/exact_match" not in registry.ids()


def test_env_disable_autoload_walks_no_entry_point() -> None:
    registry = Registry(env={"THEMIS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert {p.status for p in registry.plugins() if p.name != "core"} == {"disabled"}
    assert registry.ids() == ["core/memory", "core/noop"]


def test_settings_are_read_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEMIS_LOAD_PLUGINS", "")
    statuses = {p.name: p.status for p in Registry().plugins()}
    assert statuses["acme"] == "disabled"


def test_env_trace_plugins_logs_hook_calls_at_debug() -> None:
    with capture_logs() as logs:
        Registry(env={"THEMIS_TRACE_PLUGINS": "1", "THEMIS_LOAD_PLUGINS": "acme"}).plugins()
    calls = [e for e in logs if e["event"] == "plugin.hook_call"]
    assert {e["hook"] for e in calls} == {"register_components"}
    assert {e["log_level"] for e in calls} == {"debug"}
    assert any("acme@themis-fixture-acme" in e["plugins"] for e in calls)
    with capture_logs() as quiet:
        Registry(env={"THEMIS_LOAD_PLUGINS": "acme"}).plugins()
    assert not [e for e in quiet if e["event"].startswith("plugin.hook")]


def test_call_doctor_checks_isolates_a_raising_plugin(registry: Registry) -> None:
    from themis.core.hookspecs import DoctorCheck

    class Good:
        @themis.hookimpl
        def doctor_checks(self) -> list[DoctorCheck]:
            return [DoctorCheck(name="fine", status="ok", message="")]

    class Bad:
        @themis.hookimpl
        def doctor_checks(self) -> list[DoctorCheck]:
            raise RuntimeError("boom")

    registry.add_plugin(Good(), name="good")
    registry.add_plugin(Bad(), name="bad")
    results = dict(registry.call_doctor_checks())
    assert [c.name for c in results["good"]] == ["fine"]  # type: ignore[union-attr]
    assert isinstance(results["bad"], RuntimeError)


def test_structlog_is_not_configured_by_the_registry() -> None:
    before = structlog.get_config()
    Registry(env={}).plugins()
    assert structlog.get_config() == before
