"""Compile: validation errors, identity vs provenance, and the run_id contract."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig, StorageConfig
from themis.core.errors import (
    ComponentContractError,
    ComponentKindError,
    ConfigError,
    SecretLeakError,
    UnknownComponentError,
)
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset
from themis.core.prompts import PromptSpec


def dataset(dataset_id: str = "d", n: int = 2) -> Dataset:
    return Dataset(
        dataset_id=dataset_id,
        cases=[Case(case_id=f"c{i}", input=i, expected_output=i) for i in range(n)],
    )


def experiment(**overrides: object) -> Experiment:
    fields: dict[str, object] = {
        "generation": GenerationConfig(generator="builtin/demo_generator"),
        "evaluation": EvaluationConfig(metrics=["builtin/exact_match"]),
        "datasets": [dataset()],
    }
    fields.update(overrides)
    return Experiment.model_validate(fields)


def test_unknown_component_id_names_close_matches() -> None:
    exp = experiment(evaluation=EvaluationConfig(metrics=["builtin/exact_mtch"]))
    with pytest.raises(UnknownComponentError) as info:
        exp.compile()
    assert "builtin/exact_match" in str(info.value)


def test_component_of_the_wrong_kind_is_named() -> None:
    exp = experiment(evaluation=EvaluationConfig(parsers=["builtin/exact_match"]))
    with pytest.raises(ComponentKindError, match="metric, not a parser"):
        exp.compile()


def test_two_parsers_are_refused() -> None:
    exp = experiment(evaluation=EvaluationConfig(parsers=["builtin/json_identity", "builtin/text"]))
    with pytest.raises(ConfigError, match="only one parser"):
        exp.compile()


def test_duplicate_dataset_ids_are_refused() -> None:
    exp = experiment(datasets=[dataset("same"), dataset("same")])
    with pytest.raises(ConfigError, match="'same'"):
        exp.compile()


def test_duplicate_case_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="repeats case_id 'x'"):
        Dataset(dataset_id="d", cases=[Case(case_id="x", input=1), Case(case_id="x", input=2)])


def test_several_candidates_need_a_reducer_or_selector() -> None:
    exp = experiment(
        generation=GenerationConfig(
            generator="builtin/demo_generator", candidate_policy={"num_samples": 3}
        )
    )
    with pytest.raises(ConfigError, match="reducer or a selector"):
        exp.compile()


def test_self_consistency_needs_its_count() -> None:
    exp = experiment(
        generation=GenerationConfig(
            generator="builtin/demo_generator", candidate_policy={"self_consistency": True}
        )
    )
    with pytest.raises(ConfigError, match="self_consistency_count"):
        exp.compile()


def test_seeds_must_match_the_candidate_count() -> None:
    with pytest.raises(ConfigError, match="one seed per candidate"):
        experiment(seeds=[1, 2]).compile()


def test_a_workflow_metric_without_judges_is_refused() -> None:
    class Rubric:
        component_id = "test/rubric"
        version = "1"
        metric_family = "llm"

        def fingerprint(self) -> str:
            return "r"

        def build_workflow(self, subject: object, ctx: object) -> object:
            raise AssertionError("never built")

    exp = experiment(evaluation=EvaluationConfig(metrics=[Rubric()]))
    with pytest.raises(ConfigError, match="needs a judge model"):
        exp.compile()


def test_a_literal_secret_in_judge_config_is_refused_before_anything_is_written() -> None:
    exp = experiment(evaluation=EvaluationConfig(judge_config={"api_key": "abc123"}))
    with pytest.raises(SecretLeakError, match=r"evaluation\.judge_config\.api_key"):
        exp.compile()


def test_secret_references_and_max_tokens_pass_the_filter() -> None:
    exp = experiment(
        evaluation=EvaluationConfig(
            metrics=["builtin/exact_match"],
            judge_config={"api_key": "${OPENAI_API_KEY}", "max_tokens": 64},
        )
    )
    assert exp.compile().identity.judge_config["max_tokens"] == 64


def test_a_generator_missing_its_method_is_a_contract_error_naming_the_slot() -> None:
    class NotAGenerator:
        component_id = "test/nothing"
        version = "1"

        def fingerprint(self) -> str:
            return "n"

    exp = experiment(generation=GenerationConfig(generator=NotAGenerator()))
    with pytest.raises(ComponentContractError, match="generator"):
        exp.compile()


def test_component_specs_with_params_change_the_fingerprint() -> None:
    two = experiment(
        evaluation=EvaluationConfig(metrics=[{"id": "builtin/bleu", "params": {"max_order": 2}}])
    ).compile()
    four = experiment(evaluation=EvaluationConfig(metrics=["builtin/bleu"])).compile()
    assert two.run_id != four.run_id
    assert two.provenance.components[1].source == "registry"


def test_provenance_records_the_distribution_behind_each_component() -> None:
    snapshot = experiment().compile()
    by_slot = {c.slot: c for c in snapshot.provenance.components}
    assert by_slot["generator"].distribution == "themis-builtins"
    assert by_slot["metrics[0]"].plugin == "builtin"
    assert "themis-builtins" in snapshot.provenance.dependency_versions


def test_runtime_storage_and_metadata_never_change_the_run_id() -> None:
    base = experiment().compile().run_id
    assert (
        experiment(
            runtime=RuntimeConfig(max_concurrent_tasks=3, event_batch_size=7),
            storage=StorageConfig(store="sqlite", parameters={"path": "x.db"}),
            environment_metadata={"team": "eval"},
            git_commit="abc",
        )
        .compile()
        .run_id
        == base
    )


_identity_changes = st.sampled_from(
    [
        {"seeds": [5]},
        {"datasets": [dataset(n=3)]},
        {"datasets": [dataset("other")]},
        {"evaluation": EvaluationConfig(metrics=["builtin/f1"])},
        {"evaluation": EvaluationConfig(metrics=["builtin/exact_match"], judge_config={"t": 1})},
        {
            "generation": GenerationConfig(
                generator="builtin/demo_generator", prompt_spec=PromptSpec(instructions="hi")
            )
        },
        {
            "generation": GenerationConfig(
                generator="builtin/demo_generator", candidate_policy={"temperature": 0.5}
            )
        },
    ]
)


@settings(max_examples=20, deadline=None)
@given(change=_identity_changes)
def test_any_identity_change_moves_the_run_id(change: dict[str, object]) -> None:
    assert experiment(**change).compile().run_id != experiment().compile().run_id


@settings(max_examples=20, deadline=None)
@given(
    concurrency=st.integers(min_value=1, max_value=512),
    batch=st.integers(min_value=1, max_value=4096),
    meta=st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3),
)
def test_no_runtime_or_provenance_change_moves_the_run_id(
    concurrency: int, batch: int, meta: dict[str, str]
) -> None:
    changed = experiment(
        runtime=RuntimeConfig(max_concurrent_tasks=concurrency, event_batch_size=batch),
        environment_metadata=meta,
    )
    assert changed.compile().run_id == experiment().compile().run_id


def test_the_same_definition_gives_the_same_run_id_in_another_process() -> None:
    program = textwrap.dedent(
        """
        from themis.core.config import EvaluationConfig, GenerationConfig
        from themis.core.experiment import Experiment
        from themis.core.models import Case, Dataset
        exp = Experiment(
            generation=GenerationConfig(generator="builtin/demo_generator"),
            evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
            datasets=[Dataset(dataset_id="d", cases=[
                Case(case_id=f"c{i}", input=i, expected_output=i) for i in range(2)])],
        )
        print(exp.compile().run_id)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == experiment().compile().run_id
