"""The CLI's shared pieces: store SPECs, k=v flags, exit codes, error mapping, progress."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from themis.cli._progress import generation_progress
from themis.cli._runs import cli_errors, exit_for_status, parse_assignments, storage_from_spec
from themis.core.errors import ConfigError, RunNotFoundError, ThemisError


def test_store_spec_with_a_location_becomes_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = storage_from_spec("sqlite:runs/t.db", ["busy_timeout_s=2.5"])
    assert storage.store == "sqlite"
    assert storage.parameters == {"path": str(tmp_path / "runs" / "t.db"), "busy_timeout_s": 2.5}


def test_store_spec_without_a_location_and_in_memory_sqlite() -> None:
    assert storage_from_spec("memory").parameters == {}
    assert storage_from_spec("sqlite::memory:").parameters == {"path": ":memory:"}


def test_an_explicit_path_parameter_wins_over_the_location() -> None:
    storage = storage_from_spec("sqlite:a.db", ["path=/elsewhere/b.db"])
    assert storage.parameters["path"] == "/elsewhere/b.db"


def test_a_spec_without_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="BACKEND"):
        storage_from_spec(":x.db")


def test_assignments_parse_values_as_yaml() -> None:
    assert parse_assignments(["a=3", "b=x", "c=[1, 2]", "d="], "--flag") == {
        "a": 3,
        "b": "x",
        "c": [1, 2],
        "d": "",
    }
    with pytest.raises(ConfigError, match="--flag 'nokey' must look like key=value"):
        parse_assignments(["nokey"], "--flag")


@pytest.mark.parametrize(
    ("status", "strict", "code"),
    [
        ("failed", False, 1),
        ("partial_failure", True, 3),
        ("partial_failure", False, None),
        ("completed", True, None),
    ],
)
def test_exit_codes_follow_the_run_status(status: str, strict: bool, code: int | None) -> None:
    if code is None:
        exit_for_status(status, strict=strict)
        return
    with pytest.raises(typer.Exit) as raised:
        exit_for_status(status, strict=strict)
    assert raised.value.exit_code == code


def test_cli_errors_maps_plain_errors_and_keeps_themis_errors() -> None:
    with pytest.raises(ConfigError, match="bad value"), cli_errors():
        raise ValueError("bad value")
    with pytest.raises(ThemisError, match="permissions"), cli_errors():
        raise PermissionError("denied")
    original = RunNotFoundError("Unknown run_id: x")
    with pytest.raises(RunNotFoundError) as raised, cli_errors():
        raise original
    assert raised.value is original


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Event:
    def __init__(self, event_type: str) -> None:
        self.event_type = event_type


def test_progress_is_drawn_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with generation_progress(3, quiet=False) as subscribers:
        assert subscribers == []
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with generation_progress(3, quiet=True) as subscribers:
        assert subscribers == []
    with generation_progress(2, quiet=False) as subscribers:
        assert len(subscribers) == 1
        ticker: Any = subscribers[0]
        ticker.on_event(_Event("generation_completed"))
        ticker.on_event(_Event("parse_completed"))
        ticker.on_event(_Event("generation_failed"))
        progress = ticker._progress
        assert progress.tasks[0].completed == 2
