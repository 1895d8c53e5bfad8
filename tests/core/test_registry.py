"""Resolving component references (API §4.1, §7.5) through a real registry."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from themis.core.config import ComponentSpec
from themis.core.errors import (
    ComponentKindError,
    ConfigError,
    PluginLoadError,
    UnknownComponentError,
)
from themis.core.models import Case, ParsedOutput
from themis.core.registry import (
    ComponentInfo,
    ComponentKind,
    Registry,
    get_registry,
    load_component,
    use_registry,
)
from themis_fixture_acme.components import RUBRIC, Rubric, Strip


@pytest.fixture
def registry() -> Registry:
    """The dev environment's installed plugins, with no THEMIS_* variable in effect."""
    return Registry(env={})


class LiveMetric:
    component_id = "tests/live"
    version = "1"

    def fingerprint(self) -> str:
        return "live"

    def score(self, parsed: object, case: object, ctx: object) -> None:
        return None


def test_acme_components_resolve_by_id(registry: Registry) -> None:
    rubric = registry.create("metric", "acme/rubric", keywords=["acme"])
    assert isinstance(rubric, Rubric)
    score = rubric.score(ParsedOutput(value="ACME inc"), Case(case_id="c", input="x"), None)
    assert score.value == 1.0
    assert isinstance(registry.resolve("parser", "acme/strip"), Strip)


def test_component_kind_values_are_the_documented_ones() -> None:
    assert [k.value for k in ComponentKind] == [
        "generator",
        "selector",
        "reducer",
        "parser",
        "metric",
        "judge_model",
        "store",
        "tracing_provider",
        "subscriber",
        "report_format",
    ]


def test_describe_reports_target_plugin_and_distribution(registry: Registry) -> None:
    assert registry.describe("acme/rubric") == ComponentInfo(
        id="acme/rubric",
        kind=ComponentKind.METRIC,
        target="themis_fixture_acme.components:Rubric",
        summary="1.0 when every required keyword appears in the answer",
        plugin="acme",
        distribution="themis-fixture-acme",
        version="0.3.1",
        aliases=[],
    )
    assert registry.describe("noop").id == "core/noop"


def test_ids_filter_by_kind(registry: Registry) -> None:
    assert {"acme/rubric", "core/memory", "core/noop"} <= set(registry.ids())
    metrics = registry.ids("metric")
    assert "acme/rubric" in metrics and "acme/strip" not in metrics
    assert registry.ids(ComponentKind.STORE)[0] == "core/memory"


def test_core_components_are_registered_without_an_entry_point() -> None:
    registry = Registry(autoload=False, env={})
    assert registry.ids() == ["core/memory", "core/noop"]
    core = registry.plugins()[0]
    assert (core.name, core.distribution, core.entry_point, core.status) == (
        "core",
        "themis-core",
        None,
        "loaded",
    )
    assert registry.describe("memory").target == "themis.core.stores:InMemoryRunStore"


def test_live_object_is_returned_as_is(registry: Registry) -> None:
    live = LiveMetric()
    assert registry.resolve("metric", live) is live


def test_alias_resolves_for_alias_kinds(registry: Registry) -> None:
    tracer = registry.resolve("tracing_provider", "noop")
    assert type(tracer).__name__ == "NoOpTracingProvider"


def test_alias_is_not_resolved_for_other_kinds(registry: Registry) -> None:
    with pytest.raises(UnknownComponentError, match="unknown parser `noop`"):
        registry.resolve("parser", "noop")


def test_bare_name_suggests_the_namespaced_id(registry: Registry) -> None:
    with pytest.raises(UnknownComponentError) as info:
        registry.resolve("metric", "rubric")
    assert "did you mean: `acme/rubric`" in str(info.value)


def test_import_path_to_a_class_is_instantiated_with_params(registry: Registry) -> None:
    spec = ComponentSpec(target="themis_fixture_acme.components:Rubric", params={"keywords": ["z"]})
    rubric = registry.resolve("metric", spec)
    assert isinstance(rubric, Rubric) and rubric.keywords == ("z",)
    assert isinstance(registry.resolve("metric", "themis_fixture_acme.components:Rubric"), Rubric)


def test_import_path_to_a_component_instance_is_used_as_is(registry: Registry) -> None:
    assert registry.resolve("metric", "themis_fixture_acme.components:RUBRIC") is RUBRIC


def test_import_path_to_a_factory_calls_it_with_params(registry: Registry) -> None:
    ref = {"target": "themis_fixture_acme.components:make_rubric", "params": {"keywords": ["q"]}}
    rubric = registry.resolve("metric", ref)
    assert isinstance(rubric, Rubric) and rubric.keywords == ("q",)


def test_mapping_with_id_passes_params(registry: Registry) -> None:
    rubric = registry.resolve("metric", {"id": "acme/rubric", "params": {"keywords": ["k"]}})
    assert rubric.keywords == ("k",)


def test_invalid_mapping_is_a_config_error(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="invalid metric spec"):
        registry.resolve("metric", {"id": "acme/rubric", "target": "a.b:C"})
    with pytest.raises(ConfigError, match="invalid metric spec"):
        registry.resolve("metric", {"name": "acme/rubric"})


def test_unknown_params_name_the_accepted_ones(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="it accepts: keywords"):
        registry.resolve("metric", {"id": "acme/rubric", "params": {"keyword": ["k"]}})


def test_params_for_a_ready_instance_are_refused(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="takes no params"):
        registry.resolve(
            "metric", {"target": "themis_fixture_acme.components:RUBRIC", "params": {"x": 1}}
        )


def test_unimportable_import_path_is_a_config_error_naming_it(registry: Registry) -> None:
    expected = re.escape("cannot import the metric `no_such_pkg.mod:Thing`")
    with pytest.raises(ConfigError, match=expected):
        registry.resolve("metric", "no_such_pkg.mod:Thing")
    with pytest.raises(ConfigError, match="ClassThatIsNot"):
        registry.resolve("metric", "themis_fixture_acme.components:ClassThatIsNot")


def test_none_is_refused(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="no metric given"):
        registry.resolve("metric", None)


def test_unknown_id_error_lists_matches_and_plugins(registry: Registry) -> None:
    with pytest.raises(UnknownComponentError) as info:
        registry.create("metric", "acme/rubrik")
    message = str(info.value)
    assert message.startswith("unknown metric `acme/rubrik`")
    assert "did you mean: `acme/rubric`?" in message
    assert "core (themis-core 0.1.0)" in message
    assert "acme (themis-fixture-acme 0.3.1)" in message
    assert "`acme/rubrik` is either misspelled or its plugin is not installed" in message
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_close_matches_use_difflib_cutoff_and_at_most_three() -> None:
    registry = Registry(autoload=False, env={})
    for name in ("score_a", "score_b", "score_c", "score_d", "unrelated"):
        registry.register("metric", f"local/{name}", LiveMetric)
    with pytest.raises(UnknownComponentError) as info:
        registry.create("metric", "local/score")
    message = str(info.value)
    suggested = message.split("did you mean: ")[1].split("?")[0]
    assert suggested.count("`local/score_") == 3
    assert "unrelated" not in message


def test_unknown_namespace_of_a_first_party_plugin_names_the_extra() -> None:
    registry = Registry(autoload=False, env={})
    with pytest.raises(UnknownComponentError, match=r'pip install "themis-eval\[sqlite\]"'):
        registry.resolve("store", "sqlite")


def test_wrong_kind_says_what_the_id_is(registry: Registry) -> None:
    with pytest.raises(ComponentKindError, match=r"^`acme/rubric` is a metric, not a parser; "):
        registry.create("parser", "acme/rubric")


def test_unknown_kind_lists_the_kinds(registry: Registry) -> None:
    with pytest.raises(ValueError, match="the kinds are: generator, selector"):
        registry.create("scorer", "acme/rubric")


def test_registering_a_path_imports_nothing_until_create() -> None:
    registry = Registry(autoload=False, env={})
    registry.register("metric", "local/ghost", "themis_no_such_module.metrics:Ghost")
    assert registry.describe("local/ghost").target == "themis_no_such_module.metrics:Ghost"
    with pytest.raises(PluginLoadError) as info:
        registry.create("metric", "local/ghost")
    assert "cannot import `themis_no_such_module.metrics:Ghost`" in str(info.value)
    assert "registered as `local/ghost` by plugin `local`" in str(info.value)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert isinstance(info.value, ImportError)


def test_plugin_target_import_failure_names_the_distribution() -> None:
    registry = Registry(autoload=False, env={})

    class Plugin:
        import themis

        @themis.hookimpl
        def register_components(self, registry):  # type: ignore[no-untyped-def]
            registry.metric("ghosts/one", "themis_no_such_module:Ghost")

    registry.add_plugin(Plugin(), name="ghosts", distribution="ghost-dist", version="2.0")
    with pytest.raises(PluginLoadError, match=r"by plugin `ghosts` \(ghost-dist 2.0\)"):
        registry.create("metric", "ghosts/one")


def test_resolve_with_provenance_for_a_registry_id(registry: Registry) -> None:
    obj, prov = registry.resolve_with_provenance(
        "metric", {"id": "acme/rubric", "params": {"keywords": ["a"]}}, slot="metrics[1]"
    )
    assert isinstance(obj, Rubric)
    assert prov.model_dump() == {
        "slot": "metrics[1]",
        "component_id": "acme/rubric",
        "source": "registry",
        "spec": {"id": "acme/rubric", "params": {"keywords": ["a"]}},
        "python_class": "themis_fixture_acme.components:Rubric",
        "plugin": "acme",
        "distribution": "themis-fixture-acme",
        "distribution_version": "0.3.1",
    }


def test_resolve_with_provenance_for_an_alias_records_the_alias(registry: Registry) -> None:
    _, prov = registry.resolve_with_provenance("tracing_provider", "noop", slot="tracing")
    assert (prov.source, prov.spec, prov.plugin, prov.distribution) == (
        "registry",
        "noop",
        "core",
        "themis-core",
    )
    assert prov.python_class == "themis.core.tracing:NoOpTracingProvider"


def test_resolve_with_provenance_for_an_import_path_finds_the_distribution(
    registry: Registry,
) -> None:
    spec = ComponentSpec(target="themis_fixture_acme.components:Strip")
    _, prov = registry.resolve_with_provenance("parser", spec, slot="parsers[0]")
    assert prov.source == "import_path"
    assert prov.spec == {"target": "themis_fixture_acme.components:Strip", "params": {}}
    assert (prov.plugin, prov.distribution, prov.distribution_version) == (
        "acme",
        "themis-fixture-acme",
        "0.3.1",
    )


def test_resolve_with_provenance_for_a_live_object(registry: Registry) -> None:
    live = Rubric()
    obj, prov = registry.resolve_with_provenance("metric", live, slot="metrics[0]")
    assert obj is live
    assert (prov.source, prov.spec, prov.component_id) == ("object", None, "acme/rubric")
    assert prov.distribution == "themis-fixture-acme"
    _, local = registry.resolve_with_provenance("metric", LiveMetric(), slot="metrics[2]")
    assert (local.distribution, local.distribution_version, local.plugin) == (None, None, None)
    assert local.python_class.endswith(":LiveMetric")


def test_use_registry_swaps_and_restores() -> None:
    outer = get_registry()
    inner = Registry(autoload=False, env={})
    with use_registry(inner) as current:
        assert current is inner and get_registry() is inner
        inner.register("metric", "local/live", LiveMetric)
        assert isinstance(load_component("local/live", kind="metric"), LiveMetric)
    assert get_registry() is outer


def test_get_registry_is_one_process_wide_default() -> None:
    assert get_registry() is get_registry()


def test_themis_registry_fixture_is_isolated_and_current(themis_registry: Registry) -> None:
    assert get_registry() is themis_registry
    assert themis_registry.ids() == ["core/memory", "core/noop"]
    assert {p.status for p in themis_registry.plugins()[1:]} <= {"disabled"}


def run_snippet(code: str, env: dict[str, str] | None = None) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("> ")]


def test_resolving_an_id_imports_only_its_plugin_and_no_target_before_create() -> None:
    lines = run_snippet(
        """
        import sys
        from themis.core.registry import get_registry
        registry = get_registry()
        print(">", registry.describe("acme/rubric").id)
        print(">", sorted(p.name for p in registry.plugins(loaded_only=True)))
        modules = sys.modules
        print(">", "themis_fixture_acme.components" in modules, "themis_builtins" in modules)
        registry.create("metric", "acme/rubric")
        print(">", "themis_fixture_acme.components" in sys.modules)
        """
    )
    assert lines == ["acme/rubric", "['acme', 'core']", "False False", "True"]


def test_resolving_an_alias_tries_the_plugin_named_like_it_first() -> None:
    lines = run_snippet(
        """
        from themis.core.registry import get_registry
        registry = get_registry()
        print(">", registry.describe("sqlite").id)
        print(">", sorted(p.name for p in registry.plugins(loaded_only=True)))
        """
    )
    assert lines == ["sqlite/store", "['core', 'sqlite']"]
