"""What readers see of a judged case: every call's prompt, reply, judgment and score."""

from __future__ import annotations

from typing import Any

import pytest
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.experiment import Experiment
from themis.core.inspection import get_evaluation_execution
from themis.core.models import Case, Dataset
from themis.core.stores import InMemoryRunStore
from themis.core.workflows import EvaluationExecution
from themis.testing import FakeGenerator, FakeJudge
from themis_builtins import PanelOfJudges

REPLIES = {"test/kind": "PASS it is right", "test/strict": "FAIL it misses units"}


def _judged_run(inline_limit: int) -> tuple[InMemoryRunStore, str]:
    judges = [FakeJudge(reply, component_id=judge_id) for judge_id, reply in REPLIES.items()]
    experiment = Experiment(
        generation=GenerationConfig(generator=FakeGenerator()),
        evaluation=EvaluationConfig(metrics=[PanelOfJudges()], judge_models=judges),
        datasets=[
            Dataset(
                dataset_id="sample",
                cases=[Case(case_id="c0", input="2 m + 2 m", expected_output="4 m")],
            )
        ],
        runtime=RuntimeConfig(inline_payload_limit=inline_limit),
    )
    store = InMemoryRunStore()
    return store, experiment.run(store=store).run_id


def _check_every_call_is_visible(execution: EvaluationExecution) -> None:
    assert [c.judge_model_id for c in execution.judge_calls] == list(REPLIES)
    for prompt in execution.rendered_prompts:
        assert "Case input:\n2 m + 2 m" in prompt.content
        assert "Candidate output:\n4 m" in prompt.content
    assert [r.raw_response for r in execution.judge_responses] == list(REPLIES.values())
    assert [r.judge_model_id for r in execution.judge_responses] == list(REPLIES)
    judgments = [(j.label, j.score, j.rationale) for j in execution.parsed_judgments]
    assert judgments == [("pass", 1.0, "it is right"), ("fail", 0.0, "it misses units")]
    assert [(s.value, s.details["judge_model_id"]) for s in execution.scores] == [
        (1.0, "test/kind"),
        (0.0, "test/strict"),
    ]
    assert execution.aggregation_output is not None
    assert execution.aggregation_output.value == 0.5
    assert len(execution.trace.steps) == 2 * 4 + 1


@pytest.mark.parametrize("inline_limit", [262_144, 64], ids=["inline", "blob"])
def test_get_evaluation_execution_returns_every_judge_call(inline_limit: int) -> None:
    store, run_id = _judged_run(inline_limit)
    execution = get_evaluation_execution(
        store, run_id, case_id="c0", metric_id="builtin/panel_of_judges"
    )
    assert execution is not None
    _check_every_call_is_visible(execution)
    found = get_evaluation_execution(
        store, run_id, case_id="c0", metric_id="builtin/panel_of_judges", dataset_id="sample"
    )
    assert found == execution


@pytest.mark.parametrize("inline_limit", [262_144, 64], ids=["inline", "blob"])
def test_trace_view_evaluation_traces_show_every_judge_call(inline_limit: int) -> None:
    store, run_id = _judged_run(inline_limit)
    trace_view: Any = store.get_projection(run_id, "trace_view")
    (record,) = trace_view["evaluation_traces"]
    assert (record["case_id"], record["dataset_id"], record["case_key"]) == (
        "c0",
        "sample",
        "6:sample:c0",
    )
    assert record["metric_id"] == "builtin/panel_of_judges"
    assert record["candidate_id"] == "c0-candidate-0"
    _check_every_call_is_visible(EvaluationExecution.model_validate(record["execution"]))
