"""``themis init``: a project that runs as written, a plugin whose contract tests pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml


def test_init_then_run_in_a_fresh_directory(process: Any, tmp_path: Path) -> None:
    """The documented first steps, each in its own process, from the project directory."""
    created = process("init", "demo", cwd=tmp_path)
    assert created.code == 0, created.err
    project = tmp_path / "demo"
    assert sorted(json.loads(created.out)["files"]) == [
        ".gitignore",
        "data/sample.jsonl",
        "run.py",
        "themis.yaml",
    ]
    config = yaml.safe_load((project / "themis.yaml").read_text())
    assert config["datasets"] == [{"dataset_id": "sample", "path": "data/sample.jsonl"}]
    assert len((project / "data" / "sample.jsonl").read_text().splitlines()) == 2
    assert "runs/" in (project / ".gitignore").read_text().splitlines()
    ran = process("run", "--config", "themis.yaml", cwd=project)
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["status"] == "completed"
    report = process("report", "--config", "themis.yaml", cwd=project)
    assert report.out.splitlines()[0] == "# Run Report"
    assert "- Cases: 2 total, 2 completed, 0 failed" in report.out


def test_the_project_run_py_runs(process: Any, tmp_path: Path) -> None:
    assert process("init", "--format", "toml", cwd=tmp_path).code == 0
    assert (tmp_path / "themis.toml").exists()
    done = subprocess.run(
        [sys.executable, "run.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "case-1 builtin/exact_match 1.0" in done.stdout


def test_init_never_overwrites_without_force(cli: Any, tmp_path: Path) -> None:
    assert cli("init", str(tmp_path)).code == 0
    config = tmp_path / "themis.yaml"
    config.write_text("# mine\n")
    refused = cli("init", str(tmp_path))
    assert refused.code == 2
    assert "themis.yaml" in refused.message and "--force" in refused.message
    assert config.read_text() == "# mine\n"
    assert cli("init", str(tmp_path), "--force").code == 0
    assert config.read_text() != "# mine\n"


def test_plugin_template_layout(cli: Any, tmp_path: Path) -> None:
    result = cli("init", str(tmp_path), "--template", "plugin", "--name", "acme-eval")
    assert result.code == 0, result.err
    assert sorted(result.json()["files"]) == [
        "README.md",
        "pyproject.toml",
        "src/themis_acme_eval/__init__.py",
        "src/themis_acme_eval/metrics.py",
        "src/themis_acme_eval/plugin.py",
        "tests/test_contract.py",
    ]
    pyproject = (tmp_path / "pyproject.toml").read_text()
    assert '[project.entry-points.themis]\nacme_eval = "themis_acme_eval.plugin"' in pyproject
    assert (
        "from themis.testing import MetricContract"
        in (tmp_path / "tests" / "test_contract.py").read_text()
    )


def test_plugin_template_contract_tests_pass(cli: Any, tmp_path: Path) -> None:
    """The generated tests run (with the themis pytest plugin) and pass unchanged."""
    assert cli("init", str(tmp_path), "--template", "plugin", "--name", "acme").code == 0
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout and "failed" not in done.stdout


@pytest.mark.parametrize("name", ["core", "9lives", "has space"])
def test_plugin_name_must_be_a_namespace(cli: Any, tmp_path: Path, name: str) -> None:
    result = cli("init", str(tmp_path), "--template", "plugin", "--name", name)
    assert result.code == 2
    assert "--name" in result.message
    assert not (tmp_path / "pyproject.toml").exists()
