"""Every Python example in the docs runs as written, and the README's demo command works."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(doc: str, language: str) -> list[str]:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return [body for lang, body in _BLOCK.findall(text) if lang == language]


def run_python(code: str, cwd: Path, extra_path: Path | None = None) -> str:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out.stdout


@pytest.mark.parametrize("index", range(len(blocks("getting-started.md", "python"))))
def test_getting_started_example_runs(index: int, tmp_path: Path) -> None:
    run_python(blocks("getting-started.md", "python")[index], tmp_path)


def test_getting_started_config_block_compiles(tmp_path: Path) -> None:
    (tmp_path / "themis.yaml").write_text(blocks("getting-started.md", "yaml")[0])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sample.jsonl").write_text(
        '{"case_id": "a", "input": "x", "expected_output": "x"}\n'
    )
    printed = run_python(
        "from themis import Experiment\n"
        "print(Experiment.from_config('themis.yaml').compile().run_id)",
        tmp_path,
    )
    assert len(printed.strip()) == 64


def test_plugin_guide_example_registers_scores_and_passes_its_contract(tmp_path: Path) -> None:
    """The guide's plugin module, metric and contract test work together for real."""
    package = tmp_path / "src" / "themis_acme_doc"
    package.mkdir(parents=True)
    plugin, metrics, contract = blocks("plugins.md", "python")
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(plugin.replace("themis_acme.", "themis_acme_doc."))
    (package / "metrics.py").write_text(metrics)
    (tmp_path / "test_contract.py").write_text(contract.replace("themis_acme.", "themis_acme_doc."))
    # The hook registers the id under the plugin's namespace; resolving it scores a case.
    run_python(
        "import themis_acme_doc.plugin as plugin\n"
        "from themis.core.registry import Registry, use_registry\n"
        "registry = Registry(autoload=False)\n"
        "registry.add_plugin(plugin, name='acme')\n"
        "with use_registry(registry):\n"
        "    metric = registry.create('metric', 'acme/shouting', min_length=3)\n"
        "from themis.core.models import Case, ParsedOutput\n"
        "score = metric.score(ParsedOutput(value='HEY'), Case(case_id='c', input=''), None)\n"
        "assert score.value == 1.0, score\n",
        tmp_path,
        extra_path=tmp_path / "src",
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_contract.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "src")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert " passed" in out.stdout


def test_readme_demo_runs_then_returns_the_stored_result(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(ROOT / "examples" / "demo", demo, ignore=shutil.ignore_patterns("runs"))
    themis = Path(sys.executable).with_name("themis")

    def run() -> dict[str, object]:
        out = subprocess.run(
            [str(themis), "run", str(demo / "themis.yaml")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    first = run()
    assert first["status"] == "completed"
    assert first["progress"] == {"total_cases": 12, "completed_cases": 12, "failed_cases": 0}
    assert set(first["metric_means"]) == {  # type: ignore[arg-type]
        "builtin/exact_match",
        "builtin/f1",
        "builtin/bleu",
        "builtin/llm_rubric",
    }
    assert (demo / "runs" / "demo.sqlite3").is_file()
    assert run() == first
