"""The ``builtin`` plugin: its exports, its registrations and its laziness."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from typing import Any

import pluggy
import pytest
import themis.core.hookspecs as hookspecs
import themis_builtins
from themis.core.registry import Registry
from themis_builtins import plugin

EXPECTED_EXPORTS = [
    "BestOfN",
    "Bleu",
    "ChoiceAccuracy",
    "ChoiceLetter",
    "CodeText",
    "DemoGenerator",
    "DemoJudge",
    "ExactMatch",
    "JsonIdentity",
    "LLMRubric",
    "MajorityVote",
    "MajorityVoteJudge",
    "MathAnswer",
    "MathEquivalence",
    "PairwiseJudge",
    "PanelOfJudges",
    "TextParser",
    "TokenF1",
    "plugin",
]

# id -> (kind, class name)
EXPECTED_COMPONENTS = {
    "builtin/demo_generator": ("generator", "DemoGenerator"),
    "builtin/demo_judge": ("judge_model", "DemoJudge"),
    "builtin/best_of_n": ("selector", "BestOfN"),
    "builtin/majority_vote": ("reducer", "MajorityVote"),
    "builtin/json_identity": ("parser", "JsonIdentity"),
    "builtin/text": ("parser", "TextParser"),
    "builtin/choice_letter": ("parser", "ChoiceLetter"),
    "builtin/math_answer": ("parser", "MathAnswer"),
    "builtin/code_text": ("parser", "CodeText"),
    "builtin/exact_match": ("metric", "ExactMatch"),
    "builtin/f1": ("metric", "TokenF1"),
    "builtin/bleu": ("metric", "Bleu"),
    "builtin/choice_accuracy": ("metric", "ChoiceAccuracy"),
    "builtin/math_equivalence": ("metric", "MathEquivalence"),
    "builtin/llm_rubric": ("metric", "LLMRubric"),
    "builtin/panel_of_judges": ("metric", "PanelOfJudges"),
    "builtin/majority_vote_judge": ("metric", "MajorityVoteJudge"),
    "builtin/pairwise_judge": ("metric", "PairwiseJudge"),
}


class RecordingRegistrar:
    """Stands in for the core's registrar and records each registration."""

    namespace = "builtin"

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, Any, str]] = {}

    def register(
        self, kind: str, component_id: str, target: Any, *, summary: str = "", **_: Any
    ) -> None:
        assert component_id not in self.entries, f"{component_id} registered twice"
        self.entries[component_id] = (kind, target, summary)

    def __getattr__(self, kind: str) -> Any:
        def register_kind(component_id: str, target: Any, **kwargs: Any) -> None:
            self.register(kind, component_id, target, **kwargs)

        return register_kind


def _registered() -> dict[str, tuple[str, Any, str]]:
    registrar = RecordingRegistrar()
    plugin.register_components(registrar)  # type: ignore[arg-type]
    return registrar.entries


def test_exports_are_exactly_the_plugin_and_the_component_classes() -> None:
    assert themis_builtins.__all__ == EXPECTED_EXPORTS


def test_every_export_resolves() -> None:
    for name in themis_builtins.__all__:
        assert getattr(themis_builtins, name) is not None
    assert themis_builtins.plugin is plugin


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Blue"):
        _ = themis_builtins.Blue  # type: ignore[attr-defined]


def test_plugin_registers_all_eighteen_builtins_with_their_kinds() -> None:
    entries = _registered()
    assert len(entries) == 18
    assert {cid: kind for cid, (kind, _, _) in entries.items()} == {
        cid: kind for cid, (kind, _) in EXPECTED_COMPONENTS.items()
    }


def test_targets_are_import_paths_to_classes_that_report_the_same_id() -> None:
    for component_id, (_, target, summary) in _registered().items():
        assert isinstance(target, str), f"{component_id} should register an import path"
        module_name, _, attribute = target.partition(":")
        cls = getattr(importlib.import_module(module_name), attribute)
        assert cls.__name__ == EXPECTED_COMPONENTS[component_id][1]
        assert cls().component_id == component_id
        assert summary, f"{component_id} has no summary"


def test_hook_implementation_matches_the_hook_specification() -> None:
    """pluggy validates the implementation's signature against the spec on register."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name="builtin")
    registrar = RecordingRegistrar()
    manager.hook.register_components(registry=registrar)
    assert set(registrar.entries) == set(EXPECTED_COMPONENTS)


def test_loading_the_plugin_imports_no_component_module() -> None:
    script = textwrap.dedent(
        """
        import sys
        import themis_builtins.plugin
        print(sorted(m for m in sys.modules if m.startswith("themis_builtins")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['themis_builtins', 'themis_builtins.plugin']"


def test_registry_creates_builtins_through_the_entry_point() -> None:
    """The real registry finds the plugin by its entry point and builds with params."""
    registry = Registry()
    bleu = registry.create("metric", "builtin/bleu", max_order=2)
    assert type(bleu).__name__ == "Bleu" and bleu.max_order == 2
    info = registry.describe("builtin/exact_match")
    assert info.plugin == "builtin"
    assert info.distribution == "themis-builtins"
    assert set(EXPECTED_COMPONENTS) <= set(registry.ids())
