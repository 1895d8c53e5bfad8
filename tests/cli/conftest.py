"""Fixtures for the CLI tests: an in-process ``themis``, and projects on real SQLite stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from themis.cli._app import build_app, run
from themis.core.registry import Registry, use_registry

CAT = "the cat sat on the mat"
DATA = [
    {"case_id": "a", "input": CAT, "expected_output": CAT},
    {"case_id": "b", "input": "2+2", "expected_output": "4"},
    {"case_id": "c", "input": "no reference here", "expected_output": None},
]


@dataclass
class Result:
    """What one ``themis`` invocation printed and returned."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def message(self) -> str:
        """stderr with line wrapping undone (a narrow console may wrap the error line)."""
        return " ".join(self.err.split())


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No THEMIS_* setting of the calling shell leaks in; structlog is restored afterwards."""
    for name in list(os.environ):
        if name.startswith("THEMIS_"):
            monkeypatch.delenv(name)
    saved = structlog.get_config()
    with use_registry(Registry(env={})):
        yield
    structlog.configure(**saved)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``themis ARGS`` in-process, through the same path as the console script."""

    def invoke(*argv: str) -> Result:
        code = run(build_app(), ["--log-level", "warning", *argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def themis_process(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """Run ``python -m themis.cli ARGS`` in a fresh process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("THEMIS_")}
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "themis.cli", "--log-level", "warning", *argv],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def write_project(
    root: Path,
    *,
    metrics: str = "[builtin/exact_match, builtin/bleu]",
    judges: str = "[]",
    rows: list[dict[str, Any]] | None = None,
    name: str = "themis.yaml",
    dataset_id: str = "sample",
) -> Path:
    """A config on a SQLite store under ``root`` plus its JSONL data; returns the config."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / f"{dataset_id}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (rows or DATA)), encoding="utf-8")
    config = root / name
    config.write_text(
        textwrap.dedent(
            f"""\
            generation: {{generator: builtin/demo_generator}}
            evaluation:
              parsers: [builtin/json_identity]
              metrics: {metrics}
              judge_models: {judges}
            storage: {{store: sqlite, parameters: {{path: runs/themis.sqlite3}}}}
            datasets: [{{dataset_id: {dataset_id}, path: {data.name}}}]
            """
        ),
        encoding="utf-8",
    )
    return config


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A three-case project (one case has no reference, so BLEU fails on it)."""
    return write_project(tmp_path / "project")


@pytest.fixture
def ran(cli: Any, project: Path) -> tuple[Path, str, str]:
    """The project run once: (config, store SPEC, run_id)."""
    result = cli("run", "--config", str(project))
    assert result.code == 0, result.err
    spec = f"sqlite:{project.parent / 'runs' / 'themis.sqlite3'}"
    return project, spec, result.json()["run_id"]


@pytest.fixture
def make_project() -> Any:
    """``write_project`` as a fixture (the tests tree is no package, so nothing is imported)."""
    return write_project


@pytest.fixture
def process() -> Any:
    """``themis_process`` as a fixture."""
    return themis_process
