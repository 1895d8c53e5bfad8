"""Property tests: folding is split-independent, stores agree with builders, rows are exact."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from themis.core.events import RunEvent, event_from_dict
from themis.core.projections import PROJECTION_NAMES, ProjectionFolder, build_projection
from themis.core.results import ExecutionState
from themis.core.snapshot import RunSnapshot
from themis.core.stores import InMemoryRunStore
from themis.testing._run_events import RunEvents, sample_snapshot

SNAPSHOT = sample_snapshot(
    cases=2,
    datasets=("alpha", "beta"),
    metrics=[("test/exact", "pure"), ("test/judge", "llm"), ("test/trace", "trace")],
    candidate_policy={"num_samples": 2},
)
METRICS = ["test/exact", "test/judge", "test/trace"]
CASES = [(d, c) for d in ("alpha", "beta") for c in ("c1", "c2")]
STAGES = ["generate", "reduce", "parse", "score", "judge"]

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def action_lists(
    cases: Sequence[tuple[str, str]], metrics: Sequence[str]
) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Lists of actions, one per event kind; ``events_from`` turns them into events."""
    case_ref = st.sampled_from(cases)
    metric = st.sampled_from(metrics)
    action = st.one_of(
        st.tuples(st.just("run_started"), st.sampled_from(STAGES)),
        st.tuples(st.just("run_completed"), st.sampled_from(STAGES)),
        st.tuples(st.just("run_failed")),
        st.tuples(
            st.just("replay"),
            st.sampled_from(["reduce", "parse", "score", "judge"]),
            st.none() | st.lists(metric, min_size=1, max_size=2, unique=True),
        ),
        st.tuples(st.just("gen"), case_ref, st.integers(0, 1), st.booleans(), st.booleans()),
        st.tuples(st.just("select"), case_ref, st.booleans()),
        st.tuples(st.just("reduce"), case_ref, st.booleans()),
        st.tuples(st.just("parse"), case_ref, st.sampled_from(["ok", "null", "invalid", "fail"])),
        st.tuples(st.just("score"), case_ref, metric, st.none() | st.sampled_from([0.0, 0.5, 1.0])),
        st.tuples(st.just("eval"), case_ref, metric, st.sampled_from(["ok", "partial", "fail"])),
        st.tuples(st.just("case_failed"), case_ref, st.sampled_from([*STAGES, "bookkeeping"])),
        st.tuples(st.just("step"), case_ref, metric),
        # A whole successful case, so completed cases and scored rows are common.
        st.tuples(st.just("finish"), case_ref, st.sampled_from([0.0, 1.0])),
    )
    return st.lists(action, max_size=40)


actions = action_lists(CASES, METRICS)
# One case and two metrics: a success and its failure for the same key are then common.
focused_actions = action_lists(CASES[:1], METRICS[:2])


def events_from(snapshot: RunSnapshot, steps: Sequence[tuple[Any, ...]]) -> list[RunEvent]:
    ev = RunEvents(snapshot)
    events: list[RunEvent] = []
    for kind, *args in steps:
        if kind == "run_started":
            events.append(ev.run_started(until_stage=args[0]))
        elif kind == "run_completed":
            events.append(ev.run_completed(args[0]))
        elif kind == "run_failed":
            events.append(ev.run_failed())
        elif kind == "replay":
            stage, ids = args
            events.append(ev.replay(stage, ids if stage in ("score", "judge") else None))
        elif kind == "finish":
            (dataset_id, case_id), value = args
            workflow = [("test/judge", value), ("test/trace", 1.0)]
            events += ev.finished_case(
                case_id, pure=[("test/exact", value)], workflow=workflow, dataset_id=dataset_id
            )
        else:
            (dataset_id, case_id), *rest = args
            events.append(_case_event(ev, kind, dataset_id, case_id, rest))
    return events


def _case_event(
    ev: RunEvents, kind: str, dataset_id: str, case_id: str, rest: list[Any]
) -> RunEvent:
    if kind == "gen":
        index, ok, traced = rest
        if not ok:
            return ev.generation_failed(case_id, index, dataset_id=dataset_id)
        return ev.generated(
            case_id, index, dataset_id=dataset_id, trace=traced, conversation=traced
        )
    if kind == "select":
        if rest[0]:
            return ev.selected(case_id, dataset_id=dataset_id)
        return ev.selection_failed(case_id, dataset_id=dataset_id)
    if kind == "reduce":
        if rest[0]:
            return ev.reduced(case_id, dataset_id=dataset_id)
        return ev.reduction_failed(case_id, dataset_id=dataset_id)
    if kind == "parse":
        outcome = rest[0]
        if outcome == "fail":
            return ev.parse_failed(case_id, dataset_id=dataset_id)
        value = None if outcome == "null" else "ok"
        return ev.parsed(case_id, value, invalid=outcome == "invalid", dataset_id=dataset_id)
    if kind == "score":
        metric_id, value = rest
        if value is None:
            return ev.score_failed(case_id, metric_id, dataset_id=dataset_id)
        return ev.scored(case_id, metric_id, value, dataset_id=dataset_id)
    if kind == "eval":
        metric_id, outcome = rest
        if outcome == "fail":
            return ev.evaluation_failed(case_id, metric_id, dataset_id=dataset_id)
        return ev.evaluated(case_id, metric_id, partial=outcome == "partial", dataset_id=dataset_id)
    if kind == "case_failed":
        return ev.case_failed(case_id, rest[0], dataset_id=dataset_id)
    return ev.step(case_id, rest[0], dataset_id=dataset_id)


def all_payloads(snapshot: RunSnapshot, events: list[RunEvent]) -> dict[str, Any]:
    return {name: build_projection(name, snapshot, events) for name in PROJECTION_NAMES}


def split(events: list[RunEvent], cuts: list[int]) -> list[list[RunEvent]]:
    """``events`` cut into consecutive batches at the positions in ``cuts``."""
    bounds = sorted({0, len(events), *(c % (len(events) + 1) for c in cuts)})
    return [events[a:b] for a, b in itertools.pairwise(bounds)]


@PROPERTY_SETTINGS
@given(actions, st.lists(st.integers(0, 100), max_size=8), st.data())
def test_folder_in_batches_equals_one_pass(
    steps: list[tuple[Any, ...]], cuts: list[int], data: st.DataObject
) -> None:
    """Reading any projection between batches never changes what the fold ends with."""
    events = events_from(SNAPSHOT, steps)
    folder = ProjectionFolder(SNAPSHOT)
    folded: list[RunEvent] = []
    for batch in split(events, cuts):
        folder.apply_all(batch)
        folded += batch
        name = data.draw(st.sampled_from(PROJECTION_NAMES))
        assert folder.payload(name) == build_projection(name, SNAPSHOT, folded)
    assert {n: folder.payload(n) for n in PROJECTION_NAMES} == all_payloads(SNAPSHOT, events)


@PROPERTY_SETTINGS
@given(actions, st.lists(st.integers(0, 100), max_size=8), st.data())
def test_case_results_built_between_batches_equal_a_result_built_at_the_end(
    steps: list[tuple[Any, ...]], cuts: list[int], data: st.DataObject
) -> None:
    """What the writer prebuilds while calls are out never differs from a fresh build."""
    events = events_from(SNAPSHOT, steps)
    folder = ProjectionFolder(SNAPSHOT)
    folded: list[RunEvent] = []
    for batch in split(events, cuts):
        folder.apply_all(batch)
        folded += batch
        if data.draw(st.booleans()):
            folder.prepare_run_result()
        if data.draw(st.booleans()):
            assert folder.payload("run_result") == build_projection("run_result", SNAPSHOT, folded)
    assert folder.payload("run_result") == build_projection("run_result", SNAPSHOT, events)


@PROPERTY_SETTINGS
@given(actions, st.lists(st.integers(0, 100), max_size=8), st.data())
def test_store_build_on_read_equals_build_projection(
    steps: list[tuple[Any, ...]], cuts: list[int], data: st.DataObject
) -> None:
    """Appends in any batches with get_projection calls between: read-your-writes holds."""
    events = events_from(SNAPSHOT, steps)
    store = InMemoryRunStore()
    store.persist_snapshot(SNAPSHOT)
    appended: list[RunEvent] = []
    for batch in split(events, cuts):
        store.append_events(SNAPSHOT.run_id, batch)
        appended += batch
        for name in data.draw(st.lists(st.sampled_from(PROJECTION_NAMES), max_size=2)):
            assert store.get_projection(SNAPSHOT.run_id, name) == build_projection(
                name, SNAPSHOT, appended
            )
    stored = {n: store.get_projection(SNAPSHOT.run_id, n) for n in PROJECTION_NAMES}
    assert stored == all_payloads(SNAPSHOT, events)


@PROPERTY_SETTINGS
@given(actions)
def test_the_fold_depends_only_on_the_logged_content(steps: list[tuple[Any, ...]]) -> None:
    """Events read back from their JSON (as a durable store returns them) fold the same."""
    events = events_from(SNAPSHOT, steps)
    reread = [event_from_dict(e.to_dict()) for e in events]
    assert all_payloads(SNAPSHOT, reread) == all_payloads(SNAPSHOT, events)


@PROPERTY_SETTINGS
@given(focused_actions)
def test_a_success_and_its_failure_never_coexist(steps: list[tuple[Any, ...]]) -> None:
    state = ExecutionState.from_events(
        SNAPSHOT.run_id, events_from(SNAPSHOT, steps), snapshot=SNAPSHOT
    )
    for cs in state.case_states.values():
        assert not cs.generated_candidates.keys() & cs.generation_failures.keys()
        assert not cs.successful_scores.keys() & cs.score_failures.keys()
        assert not cs.evaluation_executions.keys() & cs.evaluation_failures.keys()
        assert cs.evaluation_execution_blob_refs.keys() <= cs.evaluation_executions.keys()
        assert not (cs.selection_error and cs.selected_candidate_ids is not None)
        assert not (cs.reduction_error and cs.reduced_candidate is not None)
        assert not (cs.parse_error and cs.parsed_output is not None)


@PROPERTY_SETTINGS
@given(actions)
def test_benchmark_rows_are_one_per_finished_case_and_metric(steps: list[tuple[Any, ...]]) -> None:
    events = events_from(SNAPSHOT, steps)
    run = build_projection("run_result", SNAPSHOT, events)
    bench = build_projection("benchmark_result", SNAPSHOT, events)
    pairs = [(r["case_key"], r["metric_id"]) for r in bench["score_rows"]]
    assert len(pairs) == len(set(pairs))
    progress = run["progress"]
    assert bench["completed_cases"] == progress["completed_cases"]
    assert bench["failed_cases"] == progress["failed_cases"]
    assert progress["completed_cases"] + progress["failed_cases"] <= progress["total_cases"] == 4
    for row in bench["score_rows"]:
        assert (row["value"] is None) == (row["outcome"] == "error")
        assert (row["error_category"] is None) == (row["outcome"] != "error")
    for metric_id, mean in bench["metric_means"].items():
        values = [r["value"] for r in bench["score_rows"] if r["metric_id"] == metric_id]
        scored = [v for v in values if v is not None]
        assert math.isclose(mean, sum(scored) / len(scored))
    for metric_id, counts in bench["outcome_counts"].items():
        assert sum(counts.values()) == sum(1 for p in pairs if p[1] == metric_id)


@PROPERTY_SETTINGS
@given(actions)
def test_completed_cases_have_a_correct_or_incorrect_row_for_every_covered_metric(
    steps: list[tuple[Any, ...]],
) -> None:
    events = events_from(SNAPSHOT, [("run_started", "judge"), *steps])
    state = ExecutionState.from_events(SNAPSHOT.run_id, events, snapshot=SNAPSHOT)
    bench = build_projection("benchmark_result", SNAPSHOT, events)
    rows = {(r["case_key"], r["metric_id"]): r for r in bench["score_rows"]}
    covered = {"judge": METRICS, "score": ["test/exact"]}.get(state.until_stage, [])
    for case in build_projection("run_result", SNAPSHOT, events)["cases"]:
        cs = state.case_states.get(case["case_key"])
        if cs is None or cs.has_failure:
            continue
        if cs.parsed_output is not None and all(m in cs.successful_scores for m in covered):
            for metric_id in covered:
                row = rows[(case["case_key"], metric_id)]
                parsed = cs.parsed_output
                nullish = parsed.value is None or parsed.metadata.get("invalid") is True
                assert row["outcome"] in (("error",) if nullish else ("correct", "incorrect"))
