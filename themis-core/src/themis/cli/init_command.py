"""``themis init``: write a starter project or a plugin package (API §8)."""

from __future__ import annotations

import importlib.util
import re
from enum import StrEnum
from pathlib import Path
from string import Template
from typing import Annotated

import structlog
import typer

from themis.cli._runs import cli_errors, emit_json
from themis.core.errors import ConfigError

__all__ = ["plugin_files", "project_files", "register"]

log = structlog.get_logger(__name__)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Template_(StrEnum):
    project = "project"
    plugin = "plugin"


class ConfigFormat(StrEnum):
    yaml = "yaml"
    toml = "toml"


def register(app: typer.Typer) -> None:
    """Add ``init`` to ``app``."""
    app.command("init")(init)


# ------------------------------------------------------------------------- project
_YAML_CONFIG = """\
# A Themis experiment. Run it with:  themis run --config themis.yaml
# Then:  themis report --config themis.yaml
generation:
  generator: builtin/demo_generator
evaluation:
  parsers: [builtin/json_identity]
  metrics: [builtin/exact_match]
storage:
$storage_yaml
datasets:
  - dataset_id: sample
    path: data/sample.jsonl
"""

_TOML_CONFIG = """\
# A Themis experiment. Run it with:  themis run --config themis.toml
# Then:  themis report --config themis.toml
[generation]
generator = "builtin/demo_generator"

[evaluation]
parsers = ["builtin/json_identity"]
metrics = ["builtin/exact_match"]

[storage]
$storage_toml

[[datasets]]
dataset_id = "sample"
path = "data/sample.jsonl"
"""

_SAMPLE = """\
{"case_id": "case-1", "input": "What is 2 + 2?", "expected_output": "4"}
{"case_id": "case-2", "input": "What is the capital of France?", "expected_output": "Paris"}
"""

_RUN_PY = '''\
"""Run the experiment in $config_name and print its status and metric means."""

from pathlib import Path

from themis.core.experiment import Experiment


def main() -> None:
    """Compile, run (or reuse the stored result) and summarise."""
    experiment = Experiment.from_config(Path(__file__).with_name("$config_name"))
    result = experiment.run()
    print(result.run_id, result.status.value)
    for case in result.cases:
        for score in case.scores:
            print(case.case_id, score.metric_id, getattr(score, "value", "error"))


if __name__ == "__main__":
    main()
'''


def project_files(fmt: str, *, persistent_store: bool) -> dict[str, str]:
    """The files of a starter project, by relative path."""
    if persistent_store:
        storage_yaml = "  store: sqlite\n  parameters: {path: runs/themis.sqlite3}"
        storage_toml = 'store = "sqlite"\nparameters = { path = "runs/themis.sqlite3" }'
    else:
        # Without themis-store-sqlite a run lives only in memory; say how to keep it.
        note = "(install themis-eval[sqlite] and use store sqlite to keep runs)"
        storage_yaml = f"  store: memory  # {note}"
        storage_toml = f'store = "memory"  # {note}'
    config_name = f"themis.{fmt}"
    source = _YAML_CONFIG if fmt == "yaml" else _TOML_CONFIG
    config = Template(source).substitute(storage_yaml=storage_yaml, storage_toml=storage_toml)
    return {
        config_name: config,
        "data/sample.jsonl": _SAMPLE,
        "run.py": Template(_RUN_PY).substitute(config_name=config_name),
        ".gitignore": "runs/\n__pycache__/\n",
    }


# -------------------------------------------------------------------------- plugin
_PYPROJECT = """\
[project]
name = "themis-$dist_name"
version = "0.1.0"
description = "A Themis plugin: $name components."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["themis-core>=0.1"]

[project.entry-points.themis]
$name = "themis_$name.plugin"

[project.optional-dependencies]
test = ["pytest>=8"]

[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/themis_$name"]
"""

_PLUGIN = '''\
"""The themis entry point of themis-$dist_name: registers its components."""

import themis


@themis.hookimpl
def register_components(registry):
    """Register this plugin's components under the ``$name/`` namespace."""
    registry.metric(
        "$name/case_insensitive_match",
        "themis_$name.metrics:CaseInsensitiveMatch",
        summary="1.0 when the answer equals the expected output, ignoring case",
    )
'''

_METRICS = '''\
"""Metrics of the $name plugin."""

from themis.core.base import content_hash
from themis.core.models import Score, ScoreError


class CaseInsensitiveMatch:
    """1.0 when the parsed answer equals the expected output, ignoring case."""

    component_id = "$name/case_insensitive_match"
    version = "0.1.0"
    metric_family = "pure"

    def __init__(self, strip: bool = True) -> None:
        self.strip = strip

    def fingerprint(self) -> str:
        """Changes whenever a parameter that changes scores changes."""
        return content_hash(
            {"component_id": self.component_id, "version": self.version, "strip": self.strip}
        )

    def score(self, parsed, case, ctx):
        """Compare the texts of the parsed value and the expected output."""
        if case.expected_output is None:
            return ScoreError(metric_id=self.component_id, reason="no_reference")
        answer, expected = str(parsed.value), str(case.expected_output)
        if self.strip:
            answer, expected = answer.strip(), expected.strip()
        return Score(metric_id=self.component_id, value=float(answer.lower() == expected.lower()))
'''

_CONTRACT_TEST = '''\
"""The metric meets the Themis metric contract, and the plugin registers it."""

from themis.testing import MetricContract
from themis_$name import plugin
from themis_$name.metrics import CaseInsensitiveMatch


class TestCaseInsensitiveMatch(MetricContract):
    component_class = CaseInsensitiveMatch
    expected_component_id = "$name/case_insensitive_match"
    fingerprint_variants = ({"strip": False},)


def test_plugin_registers_the_metric(themis_registry):
    themis_registry.add_plugin(plugin, name="$name")
    metric = themis_registry.create("metric", "$name/case_insensitive_match")
    assert isinstance(metric, CaseInsensitiveMatch)
'''

_README = """\
# themis-$dist_name

A [Themis](https://pypi.org/project/themis-eval/) plugin. It registers:

| id | kind | what |
|---|---|---|
| `$name/case_insensitive_match` | metric | 1.0 when answer and expected output match, any case |

Install it next to Themis (`pip install -e .`), then use the id in a config:

```yaml
evaluation:
  metrics: [$name/case_insensitive_match]
```

Check it with `themis plugins doctor`, and run its tests with `pip install -e '.[test]' && pytest`.
"""


def plugin_files(name: str) -> dict[str, str]:
    """The files of a plugin package named ``name``, by relative path."""
    values = {"name": name, "dist_name": name.replace("_", "-")}
    package = f"src/themis_{name}"
    return {
        "pyproject.toml": Template(_PYPROJECT).substitute(values),
        f"{package}/__init__.py": f'"""themis-{values["dist_name"]}: a Themis plugin."""\n',
        f"{package}/plugin.py": Template(_PLUGIN).substitute(values),
        f"{package}/metrics.py": Template(_METRICS).substitute(values),
        "tests/test_contract.py": Template(_CONTRACT_TEST).substitute(values),
        "README.md": Template(_README).substitute(values),
    }


def _plugin_name(name: str | None, directory: Path) -> str:
    raw = name or directory.resolve().name.removeprefix("themis-").removeprefix("themis_")
    candidate = raw.strip().lower().replace("-", "_")
    if not _NAME.match(candidate) or candidate in ("core", "builtin", "local", "themis"):
        raise ConfigError(
            f"plugin name {raw!r} is not usable as a namespace; pass --name with lower-case "
            "letters, digits and _ (starting with a letter), not core, builtin, local or themis"
        )
    return candidate


def init(
    directory: Annotated[Path, typer.Argument(metavar="[DIR]", help="Where to write.")] = Path(),
    template: Annotated[Template_, typer.Option("--template")] = Template_.project,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Plugin name (its namespace).")
    ] = None,
    fmt: Annotated[
        ConfigFormat, typer.Option("--format", help="Config format of a project.")
    ] = ConfigFormat.yaml,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a starter project (config, data, run.py) or a plugin package."""
    with cli_errors():
        if template is Template_.project:
            persistent = importlib.util.find_spec("themis_store_sqlite") is not None
            files = project_files(fmt.value, persistent_store=persistent)
        else:
            files = plugin_files(_plugin_name(name, directory))
        existing = [path for path in files if (directory / path).exists()]
        if existing and not force:
            raise ConfigError(
                f"{directory} already has {', '.join(existing)}; nothing was written. "
                "Pass --force to overwrite, or choose another directory"
            )
        for relative, text in files.items():
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        log.info("cli.init", template=template.value, directory=str(directory), files=len(files))
    emit_json({"directory": str(directory), "template": template.value, "files": sorted(files)})
