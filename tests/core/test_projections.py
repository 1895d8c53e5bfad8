"""Projections: run result, benchmark rows, timeline and trace view (API §2.8, §2.10)."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from themis.core.events import RunEvent
from themis.core.models import Score
from themis.core.projections import (
    PROJECTION_NAMES,
    ProjectionFolder,
    build_benchmark_result,
    build_projection,
    build_run_result,
    build_timeline_view,
    build_trace_view,
)
from themis.core.read_models import BenchmarkResult, BenchmarkScoreRow
from themis.core.results import RunResult, RunStatus
from themis.core.snapshot import RunSnapshot
from themis.testing._run_events import RunEvents, sample_run, sample_snapshot

EXACT, JUDGE = "test/exact", "test/judge"


@pytest.fixture
def snapshot() -> RunSnapshot:
    return sample_snapshot()


@pytest.fixture
def ev(snapshot: RunSnapshot) -> RunEvents:
    return RunEvents(snapshot)


def rows_of(snapshot: RunSnapshot, events: list[RunEvent]) -> list[BenchmarkScoreRow]:
    return build_benchmark_result(snapshot, events).score_rows


# RunResult.


def test_run_result_lists_every_case_in_snapshot_order(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    result = build_run_result(snapshot, [ev.run_started(), *ev.finished_case("c3")])
    assert [c.case_id for c in result.cases] == ["c1", "c2", "c3"]
    assert result.cases[0].case_key == "5:alpha:c1"
    assert result.cases[0].dataset_id == "alpha"
    assert result.cases[0].generated_candidates == [] and result.cases[0].scores == []
    assert [s.metric_id for s in result.cases[2].scores] == [EXACT, JUDGE]


def test_run_result_scores_follow_declared_metric_order(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.parsed("c1"), ev.score_failed("c1", JUDGE), ev.scored("c1", EXACT)]
    scores = build_run_result(snapshot, events).cases[0].scores
    assert [s.metric_id for s in scores] == [EXACT, JUDGE]


def test_run_result_candidates_follow_candidate_index(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = [ev.generated("c1", 2), ev.generated("c1", 0), ev.generated("c1", 1)]
    candidates = build_run_result(snapshot, events).cases[0].generated_candidates
    assert [c.candidate_id for c in candidates] == [f"c1-candidate-{i}" for i in range(3)]


def test_run_result_carries_status_and_completed_stage(snapshot: RunSnapshot) -> None:
    result = build_run_result(snapshot, sample_run(snapshot))
    assert result.status is RunStatus.PARTIAL_FAILURE
    assert result.completed_through_stage == "judge"


def test_run_result_payload_validates_back_into_a_run_result(snapshot: RunSnapshot) -> None:
    """The runtime returns RunResult.model_validate(get_projection(..., "run_result"))."""
    events = sample_run(snapshot)
    result = build_run_result(snapshot, events)
    assert RunResult.model_validate(build_projection("run_result", snapshot, events)) == result


@pytest.mark.parametrize(
    ("until_stage", "completed", "pending"),
    [("generate", 2, 1), ("reduce", 2, 1), ("parse", 2, 1), ("score", 2, 1), ("judge", 1, 2)],
)
def test_progress_counts_cases_for_the_requested_stage(
    snapshot: RunSnapshot, ev: RunEvents, until_stage: str, completed: int, pending: int
) -> None:
    events = [
        ev.run_started(until_stage=until_stage),
        *ev.finished_case("c1"),
        *ev.finished_case("c2", workflow=()),
    ]
    progress = build_run_result(snapshot, events).progress
    assert (progress.total_cases, progress.completed_cases, progress.failed_cases) == (
        3,
        completed,
        0,
    )
    assert progress.pending_cases == pending


def test_progress_counts_any_recorded_failure_as_failed(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [
        ev.run_started(),
        *ev.finished_case("c1"),
        ev.generated("c2", 0),
        ev.generation_failed("c2", 1),
        ev.case_failed("c3"),
    ]
    progress = build_run_result(snapshot, events).progress
    assert (progress.completed_cases, progress.failed_cases, progress.pending_cases) == (1, 2, 0)


def test_generate_stage_needs_every_candidate(ev: RunEvents) -> None:
    snapshot = sample_snapshot(candidate_policy={"num_samples": 2})
    ev = RunEvents(snapshot)
    events = [ev.run_started(until_stage="generate"), ev.generated("c1", 0), ev.generated("c2", 0)]
    events += [ev.generated("c2", 1)]
    progress = build_run_result(snapshot, events).progress
    assert (progress.completed_cases, progress.pending_cases) == (1, 2)


def test_progress_follows_the_latest_run_started(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = [ev.run_started(until_stage="score"), *ev.finished_case("c1", workflow=())]
    events += [ev.run_completed("score"), ev.run_started(until_stage="judge", mode="resume")]
    assert build_run_result(snapshot, events).progress.completed_cases == 0


# Benchmark rows.


def test_each_finished_case_gets_one_row_per_metric(snapshot: RunSnapshot) -> None:
    rows = rows_of(snapshot, sample_run(snapshot))
    assert [(r.case_id, r.metric_id) for r in rows] == [
        ("c1", EXACT),
        ("c1", JUDGE),
        ("c2", EXACT),
        ("c2", JUDGE),
        ("c3", EXACT),
        ("c3", JUDGE),
    ]


def test_pending_cases_get_no_rows(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = [ev.run_started(), ev.generated("c1"), ev.reduced("c1"), ev.parsed("c1")]
    events += [ev.scored("c1", EXACT)]
    assert rows_of(snapshot, events) == []


def test_a_failed_case_still_running_gets_no_rows(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = [ev.run_started(), ev.generated("c1"), ev.reduced("c1"), ev.parsed("c1")]
    events += [ev.score_failed("c1", EXACT)]
    assert rows_of(snapshot, events) == []
    events += [ev.evaluation_failed("c1", JUDGE), ev.score_failed("c1", JUDGE)]
    assert [r.error_category for r in rows_of(snapshot, events)] == [
        "score_failure",
        "evaluation_failure",
    ]


def test_a_score_stage_run_has_rows_for_pure_metrics_only(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.run_started(until_stage="score"), *ev.finished_case("c1", workflow=())]
    assert [r.metric_id for r in rows_of(snapshot, events)] == [EXACT]


def test_a_generate_stage_run_has_no_rows(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = [ev.run_started(until_stage="generate"), ev.generated("c1"), ev.parse_failed("c2")]
    assert rows_of(snapshot, events) == []


def _scored_until(ev: RunEvents, case_id: str) -> list[RunEvent]:
    return [ev.generated(case_id), ev.reduced(case_id)]


CATEGORY_CASES: dict[str, Any] = {
    "generation_failure": lambda ev: [ev.generation_failed("c1")],
    "selection_failure": lambda ev: [ev.generated("c1"), ev.selection_failed("c1")],
    "reduction_failure": lambda ev: [ev.generated("c1"), ev.reduction_failed("c1")],
    "parse_failure": lambda ev: [*_scored_until(ev, "c1"), ev.parse_failed("c1")],
    "case_failure": lambda ev: [*_scored_until(ev, "c1"), ev.case_failed("c1", "parse")],
    "parse_null": lambda ev: [
        *_scored_until(ev, "c1"),
        ev.parsed("c1", None),
        ev.scored("c1", EXACT, 0.0),
        ev.evaluated("c1", JUDGE, 0.0),
        ev.scored("c1", JUDGE, 0.0),
    ],
    "parse_invalid": lambda ev: [
        *_scored_until(ev, "c1"),
        ev.parsed("c1", "garbage", invalid=True),
        ev.scored("c1", EXACT, 0.0),
        ev.evaluated("c1", JUDGE, 0.0),
        ev.scored("c1", JUDGE, 0.0),
    ],
    "evaluation_failure": lambda ev: [
        *_scored_until(ev, "c1"),
        ev.parsed("c1"),
        ev.scored("c1", EXACT),
        ev.evaluation_failed("c1", JUDGE),
        ev.score_failed("c1", JUDGE),
    ],
    "evaluation_partial_failure": lambda ev: [
        *_scored_until(ev, "c1"),
        ev.parsed("c1"),
        ev.scored("c1", EXACT),
        ev.evaluated("c1", JUDGE, 1.0, partial=True),
        ev.scored("c1", JUDGE),
    ],
    "score_failure": lambda ev: [
        *_scored_until(ev, "c1"),
        ev.parsed("c1"),
        ev.scored("c1", EXACT),
        ev.evaluated("c1", JUDGE),
        ev.score_failed("c1", JUDGE, reason="no usable final score"),
    ],
}


@pytest.mark.parametrize("category", list(CATEGORY_CASES))
def test_benchmark_row_category_for_each_failure_kind(
    snapshot: RunSnapshot, ev: RunEvents, category: str
) -> None:
    events = [ev.run_started(), *CATEGORY_CASES[category](ev), ev.run_completed()]
    judge_row = next(r for r in rows_of(snapshot, events) if r.metric_id == JUDGE)
    assert judge_row.error_category == category
    assert judge_row.outcome == "error"
    assert judge_row.value is None
    assert judge_row.error_message


def test_stage_failures_give_the_same_category_to_every_metric(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.run_started(), ev.generated("c1"), ev.reduction_failed("c1")]
    assert {r.error_category for r in rows_of(snapshot, events)} == {"reduction_failure"}


def test_earlier_stage_failure_wins_over_a_case_failure(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.generated("c1"), ev.reduced("c1"), ev.parse_failed("c1"), ev.case_failed("c1")]
    assert {r.error_category for r in rows_of(snapshot, events)} == {"parse_failure"}


def test_a_surviving_candidate_avoids_a_generation_failure_row(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.run_started(), ev.generation_failed("c1", 1)]
    events += [ev.generated("c1", 0), ev.reduced("c1"), ev.parsed("c1"), ev.scored("c1", EXACT)]
    events += [ev.evaluated("c1", JUDGE), ev.scored("c1", JUDGE)]
    rows = rows_of(snapshot, events)
    assert [r.outcome for r in rows] == ["correct", "correct"]
    assert build_benchmark_result(snapshot, events).failed_cases == 1


def test_scored_rows_are_correct_at_one_and_incorrect_below(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.run_started(), *ev.finished_case("c1", pure=[(EXACT, 0.4)], workflow=[(JUDGE, 1)])]
    exact, judge = rows_of(snapshot, events)
    assert (exact.outcome, exact.value, exact.error_category) == ("incorrect", 0.4, None)
    assert (judge.outcome, judge.value) == ("correct", 1.0)
    assert exact.candidate_id == "c1-reduced"
    assert exact.details == {"why": "test"}


def test_score_failure_rows_carry_the_error_details(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = CATEGORY_CASES["score_failure"](ev)
    row = next(r for r in rows_of(snapshot, events) if r.metric_id == JUDGE)
    assert row.error_message == "no usable final score"
    assert row.details == {"kind": "test"}


def test_metric_means_and_counts_leave_out_error_rows(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = [ev.run_started(), *ev.finished_case("c1", pure=[(EXACT, 0.5)])]
    events += ev.finished_case("c2", pure=[(EXACT, 1.0)])
    events += [ev.generation_failed("c3"), ev.run_completed()]
    result = build_benchmark_result(snapshot, events)
    assert result.metric_means == {EXACT: 0.75, JUDGE: 1.0}
    assert result.outcome_counts[EXACT] == {"correct": 1, "incorrect": 1, "error": 1}
    assert result.error_counts == {
        EXACT: {"generation_failure": 1},
        JUDGE: {"generation_failure": 1},
    }
    assert (result.total_cases, result.completed_cases, result.failed_cases) == (3, 2, 1)
    assert result.dataset_ids == ["alpha"] and result.metric_ids == [EXACT, JUDGE]


def test_metric_aggregates_come_from_corpus_scorers(snapshot: RunSnapshot, ev: RunEvents) -> None:
    seen: list[list[Score]] = []

    def corpus(scores: list[Score]) -> float:
        seen.append(scores)
        return sum(s.value for s in scores) / 10

    events = [ev.run_started(), *ev.finished_case("c1", pure=[(EXACT, 0.5)])]
    events += [*ev.finished_case("c2", pure=[(EXACT, 1.0)]), ev.generation_failed("c3")]
    result = build_benchmark_result(snapshot, events, corpus_scorers={EXACT: corpus})
    assert result.metric_aggregates == {EXACT: 0.15}
    assert [s.value for s in seen[0]] == [0.5, 1.0]


def test_a_failing_or_empty_corpus_scorer_leaves_no_aggregate(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    def broken(scores: list[Score]) -> float:
        raise ZeroDivisionError("no references")

    events = [ev.run_started(), *ev.finished_case("c1")]
    scorers = {EXACT: broken, JUDGE: lambda scores: None, "test/unknown": lambda s: 1.0}
    with structlog.testing.capture_logs() as logs:
        result = build_benchmark_result(snapshot, events, corpus_scorers=scorers)
    assert result.metric_aggregates == {}
    assert any(log["event"] == "projection.corpus_score_failed" for log in logs)


def test_benchmark_payload_round_trips(snapshot: RunSnapshot) -> None:
    events = sample_run(snapshot)
    payload = build_projection("benchmark_result", snapshot, events)
    assert BenchmarkResult.model_validate(payload) == build_benchmark_result(snapshot, events)


# Timeline and trace view.


def test_timeline_indexes_entries_by_seq_and_keeps_history(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.run_started(), ev.score_failed("c1", EXACT), ev.scored("c1", EXACT)]
    entries = build_timeline_view(snapshot, events).entries
    assert [e.index for e in entries] == [1, 2, 3]
    assert [e.event_type for e in entries] == ["run_started", "score_failed", "score_completed"]
    assert entries[2].case_key == "5:alpha:c1" and entries[2].metric_id == EXACT
    assert entries[0].case_id is None and entries[0].case_key is None


def test_timeline_numbers_events_without_seq_by_position(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [e.model_copy(update={"seq": None}) for e in (ev.run_started(), ev.generated("c1"))]
    entries = build_timeline_view(snapshot, events).entries
    assert [e.index for e in entries] == [1, 2]
    assert entries[1].candidate_id == "c1-candidate-0"


def test_trace_view_records_generation_traces_and_conversations(
    snapshot: RunSnapshot, ev: RunEvents
) -> None:
    events = [ev.generated("c1", trace=True), ev.generated("c2", conversation=True)]
    events += [ev.generated("c3")]
    view = build_trace_view(snapshot, events)
    assert [(r.case_id, r.trace_id) for r in view.generation_traces] == [
        ("c1", "c1-candidate-0:generation")
    ]
    assert view.generation_traces[0].steps[0]["step_name"] == "reason"
    assert [r.trace_id for r in view.conversation_traces] == ["c2-candidate-0:conversation"]
    assert view.conversation_traces[0].messages[0] == {"role": "user", "content": "q"}


def test_trace_view_replaces_a_later_record_in_place(snapshot: RunSnapshot, ev: RunEvents) -> None:
    events = [ev.generated("c1", trace=True), ev.generated("c2", trace=True)]
    events += [ev.evaluated("c1", JUDGE, 0.0), ev.evaluated("c2", JUDGE)]
    events += [ev.generated("c1", output="again", trace=True), ev.evaluated("c1", JUDGE, 1.0)]
    view = build_trace_view(snapshot, events)
    assert [r.case_id for r in view.generation_traces] == ["c1", "c2"]
    assert [r.case_id for r in view.evaluation_traces] == ["c1", "c2"]
    assert view.evaluation_traces[0].execution.scores[0].value == 1.0
    assert view.evaluation_traces[0].candidate_id == "c1-reduced"


def test_cache_hits_contribute_traces(snapshot: RunSnapshot, ev: RunEvents) -> None:
    event = ev.generated("c1", trace=True).model_copy(update={"cache_hit": True})
    assert len(build_trace_view(snapshot, [event]).generation_traces) == 1


# build_projection and the folder.


def test_build_projection_matches_each_builder(snapshot: RunSnapshot) -> None:
    events = sample_run(snapshot)
    builders = {
        "snapshot": snapshot,
        "run_result": build_run_result(snapshot, events),
        "benchmark_result": build_benchmark_result(snapshot, events),
        "timeline_view": build_timeline_view(snapshot, events),
        "trace_view": build_trace_view(snapshot, events),
    }
    for name, model in builders.items():
        assert build_projection(name, snapshot, events) == model.model_dump(mode="json"), name
    state = build_projection("execution_state", snapshot, events)
    assert state["status"] == "partial_failure"


def test_unknown_projection_name_lists_the_valid_names(snapshot: RunSnapshot) -> None:
    with pytest.raises(ValueError, match="leaderboard") as info:
        build_projection("leaderboard", snapshot, [])
    assert all(name in str(info.value) for name in PROJECTION_NAMES)


def test_folder_skips_events_it_already_folded(snapshot: RunSnapshot) -> None:
    events = sample_run(snapshot)
    folder = ProjectionFolder(snapshot)
    folder.apply_all(events[:6])
    folder.apply_all(events)
    assert folder.last_seq == len(events)
    assert folder.payload("timeline_view") == build_projection("timeline_view", snapshot, events)


def test_folder_reuses_a_derived_model_until_the_next_event(snapshot: RunSnapshot) -> None:
    events = sample_run(snapshot)
    folder = ProjectionFolder(snapshot)
    folder.apply_all(events[:-1])
    first = folder.run_result()
    assert folder.run_result() is first
    folder.apply(events[-1])
    assert folder.run_result() is not first
    assert folder.run_result().status is RunStatus.PARTIAL_FAILURE


def test_folder_execution_state_is_a_copy(snapshot: RunSnapshot) -> None:
    folder = ProjectionFolder(snapshot)
    folder.apply_all(sample_run(snapshot))
    state = folder.execution_state()
    state.case_states.clear()
    assert folder.payload("execution_state")["case_states"]
