"""Start-up: ``themis`` converts only the command it runs, and quick-eval imports what it needs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from themis.cli._app import build_app, click_command, run
from typer.core import TyperGroup

QUICK_EVAL = ["quick-eval", "inline", "--input", '"20+22"', "--expected-output", '"20+22"']


def command_paths(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path of ``group``, depth first, in the order its help lists them."""
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, TyperGroup):
            yield from command_paths(command, (*path, name))


def help_text(command: Any, path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        command.main(args=[*path, "--help"], prog_name="themis", standalone_mode=True)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_the_lazy_command_tree_is_the_one_typer_builds(capsys: pytest.CaptureFixture[str]) -> None:
    """Same commands in the same order, and every help page word for word."""
    eager = typer.main.get_command(build_app())
    paths = [(), *command_paths(eager)]
    assert list(command_paths(click_command(build_app()))) == paths[1:]
    assert len(paths) > 20  # every group and its subcommands were walked
    for path in paths:
        expected = help_text(eager, path, capsys)
        assert "Usage: themis" in expected
        assert help_text(click_command(build_app()), path, capsys) == expected, path


def test_running_a_command_converts_only_its_own_group(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    converted: list[str] = []
    convert = typer.main.get_command_from_info

    def spy(command_info: Any, **kwargs: Any) -> Any:
        command = convert(command_info, **kwargs)
        converted.append(f"{command_info.callback.__module__}:{command.name}")
        return command

    monkeypatch.setattr(typer.main, "get_command_from_info", spy)
    assert run(build_app(), ["--log-level", "warning", *QUICK_EVAL]) == 0
    assert json.loads(capsys.readouterr().out)["metric_means"] == {"builtin/exact_match": 1.0}
    assert sorted(converted) == ["themis.cli.quick_eval:file", "themis.cli.quick_eval:inline"]


def test_a_command_added_after_build_app_runs_and_a_typo_gets_suggestions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = build_app()

    @app.command("hello-there")
    def hello_there() -> None:
        typer.echo("hi")

    assert run(app, ["hello-there"]) == 0
    assert capsys.readouterr().out == "hi\n"
    assert run(app, ["quick-evl"]) == 2
    assert "Did you mean 'quick-eval'" in capsys.readouterr().err


def test_a_group_added_without_a_name_still_merges_its_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Typer's rule for an unnamed sub-app (its commands join the root) is kept."""
    app = build_app()
    extra = typer.Typer()

    @extra.command("one")
    def one() -> None:
        typer.echo("1")

    @extra.command("two")
    def two() -> None:
        typer.echo("2")

    app.add_typer(extra)
    assert run(app, ["two"]) == 0
    assert capsys.readouterr().out == "2\n"


def test_quick_eval_imports_no_yaml_reporter_stats_bundles_or_opentelemetry() -> None:
    """What ``themis quick-eval inline`` loads, in a fresh interpreter: none of these."""
    script = (
        "import json, sys\n"
        "from themis.cli._app import build_app, run\n"
        f"code = run(build_app(), {['--log-level', 'warning', *QUICK_EVAL]!r})\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    code, modules = json.loads(done.stdout.splitlines()[-1])
    assert code == 0
    assert json.loads(done.stdout.splitlines()[0])["status"] == "completed"
    unwanted = (
        "yaml",
        "opentelemetry",
        "themis_otel.provider",
        "themis.core.reporter",
        "themis.core.stats",
        "themis.core.bundles",
        "themis.core.config_loading",
    )
    loaded = [m for m in modules if any(m == u or m.startswith(f"{u}.") for u in unwanted)]
    assert loaded == []


def test_an_app_without_a_callback_keeps_typers_single_command_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One command and no callback: Typer makes that command the program, and so does run."""
    app = typer.Typer()

    @app.command()
    def solo(times: int = 1) -> None:
        typer.echo("solo " * times)

    assert run(app, ["--times", "2"]) == 0
    assert capsys.readouterr().out == "solo solo \n"


def python_output(script: str) -> str:
    """What ``script`` prints on stdout in a fresh interpreter (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_main_hands_the_process_back_with_the_collector_as_it_found_it() -> None:
    """Start-up pauses the collector and freezes nothing: folds rely on gc.freeze being free."""
    script = (
        "import gc, json\n"
        "before = gc.get_threshold()\n"
        "from themis.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as exit_:\n"
        "    code = exit_.code\n"
        "after = [gc.isenabled(), gc.get_freeze_count(), gc.get_threshold() == before]\n"
        "print(json.dumps([code, *after]))\n"
    )
    assert json.loads(python_output(script).splitlines()[-1]) == [0, True, 0, True]


def test_garbage_a_command_leaves_at_exit_is_still_finalized() -> None:
    """The exit hook skips the old heap's scans, not the young garbage and its finalizers."""
    script = (
        "from themis.cli import main\n"
        "class Cycle:\n"
        "    def __del__(self):\n"
        "        print('finalized', flush=True)\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "cycle = Cycle()\n"
        "cycle.me = cycle\n"
        "del cycle\n"
        "print('end', flush=True)\n"
    )
    assert python_output(script).splitlines()[-2:] == ["end", "finalized"]
