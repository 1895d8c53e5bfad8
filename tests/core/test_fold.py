"""ExecutionState.apply_event: the fold of API §2.9, one rule per test."""

from __future__ import annotations

import gc
import re

import pytest
from themis.core.errors import StoreError
from themis.core.events import RunEvent, StepStartedEvent
from themis.core.results import CaseExecutionState, ExecutionState, RunStatus
from themis.core.snapshot import RunSnapshot
from themis.core.stores import InMemoryRunStore, blob_payload_loader
from themis.testing._run_events import (
    RunEvents,
    execution_payload,
    generation_payload,
    json_blob,
    sample_snapshot,
)

KEY1 = "5:alpha:c1"


@pytest.fixture
def snapshot() -> RunSnapshot:
    return sample_snapshot()


@pytest.fixture
def ev(snapshot: RunSnapshot) -> RunEvents:
    return RunEvents(snapshot)


def fold(snapshot: RunSnapshot, events: list[RunEvent], **kwargs: object) -> ExecutionState:
    return ExecutionState.from_events(snapshot.run_id, events, snapshot=snapshot, **kwargs)  # type: ignore[arg-type]


def case1(state: ExecutionState) -> CaseExecutionState:
    return state.case_states[KEY1]


# Run-level status.


def test_a_new_state_is_pending(snapshot: RunSnapshot) -> None:
    assert fold(snapshot, []).status is RunStatus.PENDING


def test_run_started_sets_running_and_its_until_stage(snapshot: RunSnapshot, ev: RunEvents) -> None:
    state = fold(snapshot, [ev.run_started(until_stage="parse")])
    assert state.status is RunStatus.RUNNING
    assert state.until_stage == "parse"


def test_run_completed_without_failures_is_completed_through_its_stage(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    state = fold(snapshot, [ev.run_started(), *ev.finished_case("c1"), ev.run_completed("score")])
    assert state.status is RunStatus.COMPLETED
    assert state.completed_through_stage == "score"
    assert state.until_stage == "score"


def test_run_completed_with_a_failed_case_is_partial_failure(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    state = fold(snapshot, [ev.run_started(), ev.parse_failed("c2"), ev.run_completed()])
    assert state.status is RunStatus.PARTIAL_FAILURE


def test_run_failed_sets_failed(snapshot: RunSnapshot, ev: RunEvents) -> None:
    assert fold(snapshot, [ev.run_started(), ev.run_failed()]).status is RunStatus.FAILED


def test_failure_after_completed_turns_partial_failure(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    state = fold(snapshot, [ev.run_started(), ev.run_completed(), ev.score_failed("c1", "m")])
    assert state.status is RunStatus.PARTIAL_FAILURE


def test_success_after_completed_keeps_completed(snapshot: RunSnapshot, ev: RunEvents) -> None:
    state = fold(snapshot, [ev.run_started(), ev.run_completed(), ev.scored("c1", "m")])
    assert state.status is RunStatus.COMPLETED


def test_failure_after_run_failed_keeps_failed(snapshot: RunSnapshot, ev: RunEvents) -> None:
    state = fold(snapshot, [ev.run_failed(), ev.parse_failed("c1")])
    assert state.status is RunStatus.FAILED


def test_a_partial_workflow_execution_counts_as_a_failure(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.run_started(), ev.evaluated("c1", "test/judge", partial=True), ev.run_completed()]
    assert fold(snapshot, events).status is RunStatus.PARTIAL_FAILURE


# A later success clears the matching failure, and a later failure the matching success.


def test_later_generation_success_clears_its_failure(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [ev.generation_failed("c1", 1), ev.generated("c1", 1)]))
    assert cs.generation_failures == {}
    assert cs.generation_failure_keys_by_index == {}
    assert cs.generated_candidates_by_index[1].candidate_id == "c1-candidate-1"


def test_later_generation_failure_clears_its_success(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [ev.generated("c1", 1), ev.generation_failed("c1", 1)]))
    assert cs.generated_candidates == {}
    assert cs.generated_candidates_by_index == {}
    assert cs.generation_failure_keys_by_index == {1: "c1-candidate-1"}


def test_generation_of_one_candidate_leaves_the_others(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    cs = case1(fold(snapshot, [ev.generated("c1", 0), ev.generation_failed("c1", 1)]))
    assert list(cs.generated_candidates) == ["c1-candidate-0"]
    assert list(cs.generation_failures) == ["c1-candidate-1"]


def test_later_selection_success_clears_its_failure(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [ev.selection_failed("c1"), ev.selected("c1", (0, 1))]))
    assert cs.selection_error is None
    assert cs.selected_candidate_ids == ["c1-candidate-0", "c1-candidate-1"]


def test_later_selection_failure_clears_its_success(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [ev.selected("c1"), ev.selection_failed("c1")]))
    assert cs.selected_candidate_ids is None
    assert cs.selection_error == "no winner"


def test_later_reduction_success_clears_its_failure(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [ev.reduction_failed("c1"), ev.reduced("c1")]))
    assert cs.reduction_error is None
    assert cs.reduced_candidate is not None


def test_later_parse_failure_clears_its_success(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [ev.parsed("c1"), ev.parse_failed("c1")]))
    assert cs.parsed_output is None
    assert cs.parse_error == "not JSON"


def test_later_score_success_clears_its_failure_only(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = [ev.score_failed("c1", "a"), ev.score_failed("c1", "b"), ev.scored("c1", "a", 0.5)]
    cs = case1(fold(snapshot, events))
    assert cs.successful_scores["a"].value == 0.5
    assert list(cs.score_failures) == ["b"]
    assert set(cs.scores) == {"a", "b"}


def test_later_score_failure_clears_its_success(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [ev.scored("c1", "a"), ev.score_failed("c1", "a")]))
    assert cs.successful_scores == {}
    assert cs.score_failures["a"].reason == "metric raised"


def test_later_evaluation_success_clears_its_failure(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = [ev.evaluation_failed("c1", "test/judge"), ev.evaluated("c1", "test/judge")]
    cs = case1(fold(snapshot, events))
    assert cs.evaluation_failures == {}
    assert cs.evaluation_executions["test/judge"].execution_id == "exec:test/judge"


def test_later_evaluation_failure_clears_its_execution(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.evaluated("c1", "test/judge"), ev.evaluation_failed("c1", "test/judge")]
    cs = case1(fold(snapshot, events))
    assert cs.evaluation_executions == {}
    assert cs.evaluation_failures == {"test/judge": "no subject"}


# case_failed and what clears it.


def test_case_failed_records_a_case_error(snapshot: RunSnapshot, ev: RunEvents) -> None:
    state = fold(snapshot, [ev.run_started(), ev.case_failed("c1", "parse"), ev.run_completed()])
    assert case1(state).case_error == "internal bug"
    assert state.status is RunStatus.PARTIAL_FAILURE


def test_success_at_the_failed_stage_clears_the_case_error(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    cs = case1(fold(snapshot, [ev.case_failed("c1", "parse"), ev.parsed("c1")]))
    assert cs.case_error is None


def test_success_further_down_clears_the_case_error(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [ev.case_failed("c1", "reduce"), ev.scored("c1", "test/exact")]))
    assert cs.case_error is None


def test_success_of_an_earlier_stage_keeps_the_case_error(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    """Resume retries a failed candidate before it reaches the stage that broke."""
    cs = case1(fold(snapshot, [ev.case_failed("c1", "judge"), ev.generated("c1", 1)]))
    assert cs.case_error == "internal bug"


def test_unknown_case_failed_stage_is_cleared_by_any_success(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    cs = case1(fold(snapshot, [ev.case_failed("c1", "bookkeeping"), ev.generated("c1")]))
    assert cs.case_error is None


def test_run_started_does_not_clear_a_case_error(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [ev.case_failed("c1"), ev.run_started(mode="resume")]))
    assert cs.case_error == "internal bug"


# replay_started clears every case from its stage down.


def scored_run(ev: RunEvents) -> list[RunEvent]:
    return [
        ev.run_started(),
        ev.generated("c1", 0),
        ev.selected("c1"),
        ev.reduced("c1"),
        ev.parsed("c1"),
        ev.scored("c1", "test/exact"),
        ev.evaluated("c1", "test/judge"),
        ev.scored("c1", "test/judge"),
        ev.run_completed(),
    ]


def test_replay_started_sets_running(snapshot: RunSnapshot, ev: RunEvents) -> None:
    state = fold(snapshot, [*scored_run(ev), ev.replay("judge")])
    assert state.status is RunStatus.RUNNING


def test_replay_from_reduce_keeps_only_generations(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [*scored_run(ev), ev.replay("reduce")]))
    assert list(cs.generated_candidates) == ["c1-candidate-0"]
    assert cs.selected_candidate_ids is None
    assert cs.reduced_candidate is None
    assert cs.parsed_output is None
    assert cs.successful_scores == {}
    assert cs.evaluation_executions == {}


def test_replay_from_parse_keeps_the_reduction(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [*scored_run(ev), ev.replay("parse")]))
    assert cs.reduced_candidate is not None
    assert cs.selected_candidate_ids == ["c1-candidate-0"]
    assert cs.parsed_output is None
    assert cs.successful_scores == {}
    assert cs.evaluation_executions == {}


def test_replay_from_score_clears_every_metric(snapshot: RunSnapshot, ev: RunEvents) -> None:
    cs = case1(fold(snapshot, [*scored_run(ev), ev.replay("score")]))
    assert cs.parsed_output is not None
    assert cs.successful_scores == {}
    assert cs.evaluation_executions == {}


def test_replay_from_score_with_metric_ids_clears_only_those(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    cs = case1(fold(snapshot, [*scored_run(ev), ev.replay("score", ["test/judge"])]))
    assert list(cs.successful_scores) == ["test/exact"]
    assert cs.evaluation_executions == {}


def test_rejudge_clears_workflow_metrics_and_keeps_pure_scores(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    cs = case1(fold(snapshot, [*scored_run(ev), ev.replay("judge")]))
    assert list(cs.successful_scores) == ["test/exact"]
    assert cs.evaluation_executions == {}


def test_rejudge_with_metric_ids_clears_only_those(ev: RunEvents) -> None:
    snapshot = sample_snapshot(
        metrics=[("test/exact", "pure"), ("test/judge", "llm"), ("test/panel", "llm")]
    )
    ev = RunEvents(snapshot)
    events = [
        *scored_run(ev),
        ev.evaluated("c1", "test/panel"),
        ev.scored("c1", "test/panel"),
        ev.replay("judge", ["test/panel"]),
    ]
    cs = case1(fold(snapshot, events))
    assert set(cs.successful_scores) == {"test/exact", "test/judge"}
    assert list(cs.evaluation_executions) == ["test/judge"]


def test_rejudge_clears_a_failed_workflow_metric_that_has_no_execution(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [
        ev.evaluation_failed("c1", "test/judge"),
        ev.score_failed("c1", "test/judge"),
        ev.replay("judge"),
    ]
    cs = case1(fold(snapshot, events))
    assert cs.evaluation_failures == {}
    assert cs.score_failures == {}


def test_rejudge_without_a_snapshot_clears_metrics_that_were_evaluated(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    state = ExecutionState.from_events(snapshot.run_id, [*scored_run(ev), ev.replay("judge")])
    assert list(case1(state).successful_scores) == ["test/exact"]


def test_replay_clears_failures_and_the_partial_status(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [
        ev.run_started(),
        ev.score_failed("c1", "test/judge"),
        ev.run_completed(),
        ev.replay("judge"),
        ev.scored("c1", "test/judge"),
        ev.run_completed(),
    ]
    assert fold(snapshot, events).status is RunStatus.COMPLETED


def test_replay_clears_a_case_error_of_its_stage_or_later(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.case_failed("c1", "judge"), ev.case_failed("c2", "reduce"), ev.replay("parse")]
    state = fold(snapshot, events)
    assert case1(state).case_error is None
    assert state.case_states["5:alpha:c2"].case_error == "internal bug"


# Keys, payloads and events the fold ignores.


def test_cases_are_keyed_by_case_key_across_datasets() -> None:
    snapshot = sample_snapshot(datasets=("alpha", "beta"))
    ev = RunEvents(snapshot)
    state = fold(snapshot, [ev.parsed("c1"), ev.parse_failed("c1", dataset_id="beta")])
    assert state.case_states["5:alpha:c1"].parse_error is None
    assert state.case_states["4:beta:c1"].parse_error == "not JSON"


def test_legacy_events_without_a_dataset_are_keyed_by_case_id(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    event = ev.parsed("c1").model_copy(update={"dataset_id": None})
    assert "c1" in fold(snapshot, [event]).case_states


def test_step_and_unknown_events_change_nothing(snapshot: RunSnapshot, ev: RunEvents) -> None:
    step = StepStartedEvent(run_id=snapshot.run_id, workflow_id="w", step_id="s", step_type="t")
    future = RunEvent(run_id=snapshot.run_id, event_type="from_the_future", seq=9)
    state = fold(snapshot, [ev.step("c1", "test/judge"), step, future])
    assert state.case_states == {}
    assert state.status is RunStatus.PENDING


def test_blob_payloads_are_resolved_through_the_loader(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    store = InMemoryRunStore()
    generation = store.store_blob(json_blob(generation_payload("c1-candidate-0", "big")), "a/j")
    execution = store.store_blob(json_blob(execution_payload("test/judge")), "a/j")
    events = [
        ev.generated("c1", blob_ref=generation),
        ev.evaluated("c1", "test/judge", blob_ref=execution),
    ]
    cs = case1(fold(snapshot, events, load_payload=blob_payload_loader(store)))
    assert cs.generated_candidates["c1-candidate-0"].final_output == "big"
    assert cs.generated_candidate_blob_refs == {"c1-candidate-0": generation}
    assert cs.evaluation_execution_blob_refs == {"test/judge": execution}


def test_blob_payload_without_a_loader_names_the_fix(snapshot: RunSnapshot, ev: RunEvents) -> None:
    event = ev.generated("c1", blob_ref="sha256:" + "a" * 64)
    with pytest.raises(StoreError, match=r"load_payload=themis\.core\.stores\.blob_payload_loader"):
        fold(snapshot, [event])


def test_missing_blob_names_the_ref(snapshot: RunSnapshot, ev: RunEvents) -> None:
    ref = "sha256:" + "b" * 64
    loader = blob_payload_loader(InMemoryRunStore())
    with pytest.raises(StoreError, match=re.escape(ref)):
        fold(snapshot, [ev.reduced("c1", blob_ref=ref)], load_payload=loader)


def test_a_completed_event_without_payload_is_skipped(snapshot: RunSnapshot, ev: RunEvents) -> None:
    event = ev.generated("c1").model_copy(update={"result": None})
    assert case1(fold(snapshot, [ev.generation_failed("c1"), event])).generation_failures


def test_apply_event_returns_the_state_for_chaining(snapshot: RunSnapshot, ev: RunEvents) -> None:
    state = ExecutionState(run_id=snapshot.run_id)
    assert state.apply_event(ev.run_started()) is state


def test_state_rebuilt_from_its_json_remembers_failed_cases(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    state = fold(snapshot, [ev.run_started(), ev.parse_failed("c1")])
    rebuilt = ExecutionState.model_validate(state.model_dump(mode="json"))
    assert rebuilt.model_dump() == state.model_dump()
    assert rebuilt.apply_event(ev.run_completed()).status is RunStatus.PARTIAL_FAILURE


# The measured shortcuts behave exactly like the plain pydantic paths.


def test_a_fresh_case_state_equals_a_default_one() -> None:
    from themis.core.results import _new_case_state

    created = _new_case_state()
    default = CaseExecutionState()
    assert created == default
    # One shared set naming every field, so pydantic's __setattr__ adding to it is a no-op
    # (a set of its own per case would be 216 bytes; see test_construct).
    assert created.model_fields_set == set(CaseExecutionState.model_fields)
    assert created.__pydantic_private__ == default.__pydantic_private__


def test_case_states_never_share_their_containers(snapshot: RunSnapshot, ev: RunEvents) -> None:
    state = fold(snapshot, [ev.generated("c1"), ev.parse_failed("c2")])
    assert state.case_states["5:alpha:c2"].generated_candidates == {}


@pytest.mark.parametrize("enabled", [True, False])
def test_folding_restores_the_garbage_collector_setting(
    snapshot: RunSnapshot, ev: RunEvents, enabled: bool
) -> None:
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        fold(snapshot, [ev.run_started(), ev.generated("c1")])
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
