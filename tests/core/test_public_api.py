"""The public faces of ``themis`` and ``themis.core`` are pinned: a change here is an API change."""

from __future__ import annotations

import importlib

import themis
import themis.core

ROOT_NAMES = {
    "Experiment",
    "InMemoryRunStore",
    "PromptSpec",
    "Reporter",
    "RunEstimate",
    "RunResult",
    "RunSnapshot",
    "RunStatus",
    "RunStore",
    "RuntimeConfig",
    "StatsEngine",
    "__version__",
    "evaluate",
    "evaluate_async",
    "get_evaluation_execution",
    "get_execution_state",
    "get_run_snapshot",
    "hookimpl",
    "quickcheck",
    "snapshot_report",
    *(
        f"{verb}_{kind}_bundle"
        for verb in ("export", "import")
        for kind in ("generation", "reduction", "parse", "score", "evaluation", "run")
    ),
}

# API.md §1.2: the names each submodule must offer (a subset; modules may offer more).
CORE_CONTRACT = {
    "base": {"FrozenModel", "HashableModel", "JSONValue", "canonical_json", "content_hash"},
    "models": {
        "Case",
        "Dataset",
        "Message",
        "TraceStep",
        "GenerationResult",
        "ReducedCandidate",
        "ParsedOutput",
        "Score",
        "ScoreError",
        "WorkflowTrace",
        "ConversationTrace",
    },
    "prompts": {"PromptSpec", "render_prompt_spec"},
    "config": {
        "GenerationConfig",
        "EvaluationConfig",
        "StorageConfig",
        "RuntimeConfig",
        "ComponentSpec",
        "DatasetSource",
    },
    "contexts": {
        "GenerateContext",
        "SelectContext",
        "ReduceContext",
        "ParseContext",
        "ScoreContext",
        "EvalScoreContext",
    },
    "events": {"RunEvent", "CaseRunEvent", "EVENT_TYPES", "event_from_dict"},
    "results": {
        "RunStatus",
        "ProgressSnapshot",
        "CaseExecutionState",
        "ExecutionState",
        "GenerationWorkItem",
        "CaseResult",
        "RunResult",
        "RunEstimate",
    },
    "snapshot": {
        "ComponentRef",
        "ComponentRefs",
        "DatasetRef",
        "RunIdentity",
        "RunProvenance",
        "ComponentProvenance",
        "PluginInfo",
        "RunSnapshot",
        "StoredRun",
    },
    "projections": {
        "PROJECTION_NAMES",
        "build_projection",
        "ProjectionFolder",
        "build_run_result",
        "build_benchmark_result",
        "build_timeline_view",
        "build_trace_view",
    },
    "stores": {
        "InMemoryRunStore",
        "BaseRunStore",
        "create_run_store",
        "register_store_backend",
        "available_store_backends",
        "memory_store",
    },
    "planner": {"Planner", "judge_seed_for_call"},
    "workflow_runner": {"DefaultWorkflowRunner", "WorkflowBuildError"},
    "tracing": {"NoOpTracingProvider"},
    "registry": {
        "Registry",
        "ComponentRegistrar",
        "ComponentKind",
        "ComponentInfo",
        "get_registry",
        "use_registry",
        "load_component",
    },
    "inspection": {"get_run_snapshot", "get_execution_state", "get_evaluation_execution"},
    "case_refs": {"CaseRef", "case_key_for", "resolve_case_key"},
    "security": {"is_secret_reference", "sanitize_mapping"},
    "dataset_inputs": {
        "dataset_from_inline",
        "dataset_from_jsonl",
        "MissingOptionalDependencyError",
    },
    "config_loading": {"load_experiment_config"},
    "experiment": {"Experiment"},
    "evaluate": {"evaluate", "evaluate_async"},
    "reporter": {"Reporter", "snapshot_report"},
    "stats": {"StatsEngine"},
    "quickcheck": {"quickcheck"},
}


def test_the_root_exports_exactly_the_documented_names() -> None:
    assert set(themis.__all__) == ROOT_NAMES
    for name in ROOT_NAMES:
        assert getattr(themis, name) is not None


def test_every_documented_core_name_is_in_its_module_and_in_themis_core() -> None:
    for module_name, names in CORE_CONTRACT.items():
        module = importlib.import_module(f"themis.core.{module_name}")
        missing = names - set(module.__all__)
        assert not missing, f"themis.core.{module_name} lacks {sorted(missing)}"
        for name in names:
            assert getattr(themis.core, name) is getattr(module, name)


def test_themis_core_re_exports_every_public_name_of_its_submodules() -> None:
    for module_name in themis.core.SUBMODULES:
        module = importlib.import_module(f"themis.core.{module_name}")
        for name in module.__all__:
            assert hasattr(themis.core, name), f"themis.core.{name} (from {module_name})"
    assert "Orchestrator" not in dir(themis.core)  # the orchestrator is internal
