"""Every example in docs/cli.md and docs/reporting.md runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(doc: str, language: str) -> list[str]:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return [body for lang, body in _BLOCK.findall(text) if lang == language]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THEMIS_")}
    # The console script lives next to this interpreter; put it first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["THEMIS_LOG_LEVEL"] = "warning"
    return env


def test_cli_guide_runs_as_one_session(tmp_path: Path) -> None:
    """All sh blocks, in order, in one bash session that stops at the first failure."""
    script = "set -euo pipefail\n" + "\n".join(blocks("cli.md", "sh"))
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    out = done.stdout
    assert "init refused (exit 2)" in out
    assert "# Run Report" in out
    assert "exit 2 (2: a config error)" in out
    assert "exit 3 (3: under --strict" in out
    assert '{"metric_means":{"builtin/exact_match":1.0}' in out  # quick-eval inline
    demo = tmp_path / "demo"
    assert (demo / "reports" / "run.html").read_text().startswith("<!DOCTYPE html>")
    assert (demo / "bundles" / "run.jsonl").exists()
    assert (tmp_path / "acme-plugin" / "tests" / "test_contract.py").exists()


def test_reporting_guide_python_runs(tmp_path: Path) -> None:
    """The python blocks of docs/reporting.md, in order, in one interpreter."""
    code = "\n".join(blocks("reporting.md", "python"))
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def test_reporting_guide_shell_examples_run(tmp_path: Path) -> None:
    """The sh blocks of docs/reporting.md run after the python blocks made their run."""
    code = "\n".join(blocks("reporting.md", "python"))
    env = clean_env()
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=600)
    script = "set -euo pipefail\n" + "\n".join(blocks("reporting.md", "sh"))
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
