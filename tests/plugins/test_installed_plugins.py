"""Installed plugin distributions, in real venvs: failures are isolated and named."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def plugins_json(venv: Any, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``themis [args] plugins --json`` keyed by (plugin name, distribution)."""
    result = venv.themis(*args, "plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def log_events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines the CLI wrote to stderr (JSON because stderr is not a TTY)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def run_python(venv: Any, code: str, env: dict[str, str] | None = None) -> Any:
    return venv.python_c(textwrap.dedent(code), env=env)


def out(result: Any) -> list[str]:
    """The lines a snippet printed with ``print(">", ...)``.

    Without the CLI nothing configures structlog, whose default prints warnings such as
    ``plugin.load_failed`` to stdout; the marker keeps them apart from the results.
    """
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("> ")]


def test_broken_plugin_is_listed_failed_with_its_distribution(zoo_venv: Any) -> None:
    broken = plugins_json(zoo_venv)["broken"]
    assert broken["status"] == "failed"
    assert broken["distribution"] == "themis-fixture-broken"
    assert broken["version"] == "0.0.1"
    assert broken["entry_point"] == "broken = themis_fixture_broken.plugin"
    assert broken["error"] == "ModuleNotFoundError: No module named 'acme_sdk'"
    assert broken["components"] == []


def test_plugins_table_shows_the_failed_row_and_exits_zero(zoo_venv: Any) -> None:
    result = zoo_venv.themis("plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Plugin", "Distribution", "Version", "Status", "Components"]
    rows = {line.split()[0]: line.split(maxsplit=4) for line in lines[1:]}
    assert rows["broken"] == [
        "broken",
        "themis-fixture-broken",
        "0.0.1",
        "failed",
        "ModuleNotFoundError: No module named 'acme_sdk'",
    ]
    assert rows["acme"] == ["acme", "themis-fixture-acme", "0.3.1", "loaded", "metric 1, parser 1"]
    assert rows["core"][:4] == ["core", "themis-core", "0.1.0", "loaded"]


def test_other_plugins_still_work_beside_a_broken_one(zoo_venv: Any) -> None:
    result = run_python(
        zoo_venv,
        """
        from themis.core.registry import get_registry
        from themis.core.models import Case, ParsedOutput
        registry = get_registry()
        statuses = {p.name: p.status for p in registry.plugins()}
        rubric = registry.create("metric", "acme/rubric", keywords=["themis"])
        score = rubric.score(ParsedOutput(value="Themis rocks"), Case(case_id="c", input="x"), None)
        print(">", statuses["broken"], statuses["acme"], statuses["builtin"], score.value)
        print(">", type(registry.resolve("metric", "builtin/exact_match")).__name__)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert out(result) == ["failed loaded loaded 1.0", "ExactMatch"]


def test_load_failure_is_logged_once_as_plugin_load_failed(zoo_venv: Any) -> None:
    result = zoo_venv.themis("plugins")
    failures = [e for e in log_events(result.stderr) if e["event"] == "plugin.load_failed"]
    by_plugin = {e["plugin"]: e for e in failures}
    assert sorted(by_plugin) == ["broken", "sneaky"]
    assert len(failures) == 2
    assert by_plugin["broken"]["distribution"] == "themis-fixture-broken"
    assert by_plugin["broken"]["version"] == "0.0.1"
    assert by_plugin["broken"]["entry_point"] == "broken = themis_fixture_broken.plugin"


def test_unknown_id_in_a_failed_namespace_reports_that_plugins_error(zoo_venv: Any) -> None:
    result = run_python(
        zoo_venv,
        """
        from themis.core.registry import get_registry
        from themis.core.errors import UnknownComponentError
        try:
            get_registry().create("metric", "broken/anything")
        except UnknownComponentError as exc:
            print(">", str(exc).replace("\\n", " "))
            print(">", "CAUSE", type(exc.__cause__).__name__)
        """,
    )
    assert result.returncode == 0, result.stderr
    message, cause = out(result)
    assert message.startswith("unknown metric `broken/anything`")
    assert "themis-fixture-broken 0.0.1" in message
    assert "failed to load: ModuleNotFoundError: No module named 'acme_sdk'" in message
    assert "--no-plugin broken" in message
    assert cause == "CAUSE ModuleNotFoundError"


def test_resolving_an_id_loads_only_its_namespace(zoo_venv: Any) -> None:
    """The broken plugin is never imported when nothing asks for it."""
    result = run_python(
        zoo_venv,
        """
        import sys
        from themis.core.registry import get_registry
        registry = get_registry()
        registry.resolve("metric", "acme/rubric")
        print(">", sorted(p.name for p in registry.plugins(loaded_only=True)))
        print(">", sorted(m for m in sys.modules if m.startswith("themis_")))
        """,
    )
    assert result.returncode == 0, result.stderr
    loaded, modules = out(result)
    assert loaded == "['acme', 'core']"
    assert "themis_fixture_broken" not in modules and "themis_builtins" not in modules
    assert "plugin.load_failed" not in result.stderr


def test_strict_plugins_makes_a_load_failure_fatal(zoo_venv: Any) -> None:
    result = zoo_venv.themis("plugins", env={"THEMIS_STRICT_PLUGINS": "1"})
    assert result.returncode == 1
    assert "error: cannot load the plugin `broken` (themis-fixture-broken 0.0.1)" in result.stderr
    assert "No module named 'acme_sdk'" in result.stderr
    assert "THEMIS_STRICT_PLUGINS" in result.stderr


def test_strict_plugins_raises_plugin_load_error_from_the_registry(zoo_venv: Any) -> None:
    result = run_python(
        zoo_venv,
        """
        from themis.core.registry import get_registry
        from themis.core.errors import PluginLoadError
        try:
            get_registry().plugins()
        except PluginLoadError as exc:
            print(">", "PluginLoadError", type(exc.__cause__).__name__)
        """,
        env={"THEMIS_STRICT_PLUGINS": "1"},
    )
    assert out(result) == ["PluginLoadError ModuleNotFoundError"], result.stderr


def test_plugin_registering_outside_its_namespace_fails_as_a_whole(zoo_venv: Any) -> None:
    sneaky = plugins_json(zoo_venv)["sneaky"]
    assert sneaky["status"] == "failed"
    prefix = "NamespaceError: plugin `sneaky` (themis-fixture-sneaky 1.0.0)"
    assert sneaky["error"].startswith(prefix)
    assert "owns the namespace `sneaky/` and cannot register `builtin/sneaky`" in sneaky["error"]
    # Its valid registration was rolled back too: a plugin loads whole or not at all.
    assert sneaky["components"] == []
    result = run_python(
        zoo_venv,
        """
        from themis.core.registry import get_registry
        ids = get_registry().ids()
        print(">", "sneaky/fine" in ids, "builtin/sneaky" in ids)
        """,
    )
    assert out(result) == ["False False"], result.stderr


def test_block_plugins_marks_them_blocked_and_skips_loading(zoo_venv: Any) -> None:
    result = zoo_venv.themis("plugins", "--json", env={"THEMIS_BLOCK_PLUGINS": "broken, Sneaky"})
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["broken"]["status"] == "blocked"
    assert plugins["sneaky"]["status"] == "blocked"
    assert plugins["acme"]["status"] == "loaded"
    assert "plugin.load_failed" not in result.stderr


def test_no_plugin_flag_blocks_like_the_env_var(zoo_venv: Any) -> None:
    plugins = plugins_json(zoo_venv, "--no-plugin", "broken", "--no-plugin", "sneaky")
    assert (plugins["broken"]["status"], plugins["sneaky"]["status"]) == ("blocked", "blocked")
    assert plugins["builtin"]["status"] == "loaded"


def test_load_plugins_is_an_allow_list(zoo_venv: Any) -> None:
    plugins = plugins_json(zoo_venv, env={"THEMIS_LOAD_PLUGINS": "acme"})
    statuses = {name: p["status"] for name, p in plugins.items()}
    assert statuses == {
        "core": "loaded",
        "acme": "loaded",
        "builtin": "disabled",
        "broken": "disabled",
        "sneaky": "disabled",
    }


def test_empty_load_plugins_loads_none(zoo_venv: Any) -> None:
    plugins = plugins_json(zoo_venv, env={"THEMIS_LOAD_PLUGINS": ""})
    assert {n for n, p in plugins.items() if p["status"] == "loaded"} == {"core"}


def test_disable_autoload_loads_only_the_allow_listed(zoo_venv: Any) -> None:
    plugins = plugins_json(zoo_venv, env={"THEMIS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert {n for n, p in plugins.items() if p["status"] == "loaded"} == {"core"}
    plugins = plugins_json(
        zoo_venv, env={"THEMIS_DISABLE_PLUGIN_AUTOLOAD": "1", "THEMIS_LOAD_PLUGINS": "builtin"}
    )
    assert {n for n, p in plugins.items() if p["status"] == "loaded"} == {"core", "builtin"}


def test_trace_plugins_logs_hook_calls_at_debug(zoo_venv: Any) -> None:
    env = {"THEMIS_TRACE_PLUGINS": "1", "THEMIS_LOAD_PLUGINS": "acme"}
    result = zoo_venv.themis("--log-level", "debug", "plugins", env=env)
    calls = [e for e in log_events(result.stderr) if e["event"] == "plugin.hook_call"]
    assert {"register_components"} <= {e["hook"] for e in calls}
    assert all(e["level"] == "debug" for e in calls)
    quiet = zoo_venv.themis("--log-level", "info", "plugins", env=env)
    assert "plugin.hook_call" not in quiet.stderr
    untraced = zoo_venv.themis(
        "--log-level", "debug", "plugins", env={"THEMIS_LOAD_PLUGINS": "acme"}
    )
    assert "plugin.hook_call" not in untraced.stderr


def test_doctor_fails_on_a_broken_plugin(zoo_venv: Any) -> None:
    result = zoo_venv.themis("plugins", "doctor", "--json")
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["plugin broken"]["status"] == "fail"
    assert "No module named 'acme_sdk'" in checks["plugin broken"]["message"]
    assert checks["component acme/rubric"]["status"] == "ok"
    assert checks["plugin acme: acme.config"]["status"] == "ok"
    blocked = zoo_venv.themis("--no-plugin", "broken", "--no-plugin", "sneaky", "plugins", "doctor")
    assert blocked.returncode == 0, blocked.stdout
    assert "0 failed" in blocked.stdout


def test_duplicate_id_names_both_distributions(dup_venv: Any) -> None:
    result = run_python(
        dup_venv,
        """
        from themis.core.registry import get_registry
        from themis.core.errors import DuplicateComponentError
        try:
            get_registry().create("metric", "acme/rubric")
        except DuplicateComponentError as exc:
            print(">", exc)
        """,
    )
    assert result.returncode == 0, result.stderr
    (message,) = out(result)
    assert "`acme/rubric` is registered by two plugins" in message
    assert "themis-fixture-acme 0.3.1" in message
    assert "themis-fixture-acme-dup 9.9.0" in message


def test_duplicate_is_reported_by_list_and_doctor(dup_venv: Any) -> None:
    result = dup_venv.themis("plugins", "--json")
    rows = json.loads(result.stdout)
    acme_rows = {r["distribution"]: r for r in rows if r["name"] == "acme"}
    assert set(acme_rows) == {"themis-fixture-acme", "themis-fixture-acme-dup"}
    failed = [r for r in acme_rows.values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"].startswith("DuplicateComponentError")
    doctor = dup_venv.themis("plugins", "doctor", "--json")
    assert doctor.returncode == 1
    duplicates = [c for c in json.loads(doctor.stdout) if c["name"] == "duplicates"]
    assert len(duplicates) == 1 and "themis-fixture-acme-dup 9.9.0" in duplicates[0]["message"]


def test_strict_plugins_raises_the_duplicate_at_discovery(dup_venv: Any) -> None:
    result = dup_venv.themis("plugins", env={"THEMIS_STRICT_PLUGINS": "1"})
    assert result.returncode == 1
    assert "error: component id `acme/rubric` is registered by two plugins" in result.stderr
