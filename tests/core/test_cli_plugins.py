"""The ``themis`` CLI skeleton and ``themis plugins``: output, options, logging, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog
import themis
import typer
from themis.cli._app import build_app, exit_code_for, run
from themis.cli._logging import configure_logging
from themis.core.errors import ConfigError, StoreError, UnknownComponentError
from themis.core.registry import ComponentRegistrar, Registry, use_registry


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """The CLI configures structlog globally; give the next test the configuration back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def registry() -> Iterator[Registry]:
    """The dev environment's plugins, ignoring THEMIS_* variables of the calling shell."""
    with use_registry(Registry(env={})) as current:
        yield current


def themis_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(build_app(), argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plugins_and_plugins_list_print_the_same_table(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, bare, _ = themis_cli(capsys, "plugins")
    assert code == 0
    code, listed, _ = themis_cli(capsys, "plugins", "list")
    assert code == 0 and bare == listed
    lines = bare.splitlines()
    assert lines[0].split() == ["Plugin", "Distribution", "Version", "Status", "Components"]
    rows = {line.split()[0]: line.split(maxsplit=4) for line in lines[1:]}
    assert rows["core"] == [
        "core",
        "themis-core",
        themis.__version__,
        "loaded",
        "store 1 (alias memory), tracing_provider 1 (alias noop)",
    ]
    assert rows["acme"] == ["acme", "themis-fixture-acme", "0.3.1", "loaded", "metric 1, parser 1"]
    assert all(line == line.rstrip() for line in lines)


def test_plugins_json_lists_plugin_info_with_components_and_hooks(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = themis_cli(capsys, "plugins", "--json")
    assert code == 0
    plugins = {p["name"]: p for p in json.loads(out)}
    acme = plugins["acme"]
    assert {k: acme[k] for k in ("distribution", "version", "entry_point", "status", "error")} == {
        "distribution": "themis-fixture-acme",
        "version": "0.3.1",
        "entry_point": "acme = themis_fixture_acme.plugin",
        "status": "loaded",
        "error": None,
    }
    assert acme["hooks"] == ["doctor_checks", "register_components"]
    rubric = next(c for c in acme["components"] if c["id"] == "acme/rubric")
    assert rubric["kind"] == "metric"
    assert rubric["target"] == "themis_fixture_acme.components:Rubric"
    code, listed, _ = themis_cli(capsys, "plugins", "list", "--json")
    assert json.loads(listed) == json.loads(out)


def test_no_plugin_blocks_for_this_invocation_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = themis_cli(capsys, "--no-plugin", "acme", "plugins", "--json")
    assert code == 0
    assert {p["name"]: p["status"] for p in json.loads(out)}["acme"] == "blocked"
    _, again, _ = themis_cli(capsys, "plugins", "--json")
    assert {p["name"]: p["status"] for p in json.loads(again)}["acme"] != "blocked"


def test_version_prints_the_core_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = themis_cli(capsys, "--version")
    assert (code, out) == (0, f"themis {themis.__version__}\n")


def test_doctor_exits_zero_when_every_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    with use_registry(Registry(autoload=False, env={})) as isolated:
        isolated.register(
            "tracing_provider", "local/noop", "themis.core.tracing:NoOpTracingProvider"
        )
        code, out, _ = themis_cli(capsys, "plugins", "doctor", "--json")
    checks = {c["name"]: c["status"] for c in json.loads(out)}
    assert checks["component local/noop"] == "ok"
    assert code == (1 if "fail" in checks.values() else 0)
    assert "fail" not in [
        checks["plugin core"],
        checks["plugin local"],
        checks["component core/noop"],
    ]


def test_doctor_exits_one_on_a_failed_check(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken:
        @themis.hookimpl
        def register_components(self, registry: ComponentRegistrar) -> None:
            registry.parser("bad/parser", "themis_no_such_module:Parser")

    with use_registry(Registry(autoload=False, env={})) as isolated:
        isolated.add_plugin(Broken(), name="bad", distribution="bad-dist", version="0.1")
        code, out, _ = themis_cli(capsys, "plugins", "doctor")
    assert code == 1
    failing = [line for line in out.splitlines() if line.startswith("component bad/parser")]
    assert len(failing) == 1 and " fail " in failing[0]
    assert out.splitlines()[-1].startswith(f"{len(out.splitlines()) - 2} checks: ")


def app_raising(error: Exception) -> typer.Typer:
    app = build_app()

    @app.command("explode")
    def explode() -> None:
        raise error

    return app


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("evaluation.parsers: only one parser is supported"), 2),
        (UnknownComponentError("unknown metric `x/y`"), 2),
        (StoreError("SqliteRunStore.append_events failed"), 1),
    ],
)
def test_themis_errors_print_one_line_and_map_to_exit_codes(
    capsys: pytest.CaptureFixture[str], error: Exception, code: int
) -> None:
    assert run(app_raising(error), ["explode"]) == code
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {error}"
    assert "Traceback" not in captured.err


def test_validation_errors_are_usage_errors() -> None:
    from themis.core.config import ComponentSpec

    with pytest.raises(ValueError) as info:
        ComponentSpec()
    assert exit_code_for(info.value) == 2
    assert exit_code_for(RuntimeError("bug")) == 1


def test_usage_errors_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert themis_cli(capsys, "no-such-command")[0] == 2
    code, _, err = themis_cli(capsys, "--log-format", "xml", "plugins")
    assert code == 2 and "'xml'" in err and "--log-format" in err


def test_configure_logging_renders_json_with_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    structlog.contextvars.bind_contextvars(run_id="r1")
    try:
        log = structlog.get_logger("tests")
        log.debug("hidden.event")
        log.warning("shown.event", cases=3)
    finally:
        structlog.contextvars.clear_contextvars()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["event"], event["level"], event["cases"], event["run_id"]) == (
        "shown.event",
        "warning",
        3,
        "r1",
    )
    assert "timestamp" in event


def test_logging_defaults_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THEMIS_LOG_LEVEL", "error")
    monkeypatch.setenv("THEMIS_LOG_FORMAT", "console")
    configure_logging()
    structlog.get_logger("tests").warning("filtered.event")
    structlog.get_logger("tests").error("kept.event")
    err = capsys.readouterr().err
    assert "filtered.event" not in err and "kept.event" in err
    assert not err.lstrip().startswith("{")
    monkeypatch.setenv("THEMIS_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match="unknown log level 'loud'"):
        configure_logging()


def test_logs_go_to_stderr_never_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THEMIS_TRACE_PLUGINS", "1")  # debug events for every hook call
    argv = ("--log-level", "debug", "--log-format", "json", "--no-plugin", "otel", "plugins")
    code, out, err = themis_cli(capsys, *argv, "--json")
    assert code == 0
    assert {p["name"] for p in json.loads(out)} >= {"core", "acme"}
    events = [json.loads(line) for line in err.splitlines()]
    assert "plugin.hook_call" in {e["event"] for e in events}


@pytest.mark.parametrize("module", ["themis", "themis.cli"])
def test_python_dash_m_runs_the_cli(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, f"themis {themis.__version__}\n")
