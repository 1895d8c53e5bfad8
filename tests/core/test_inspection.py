"""Inspection helpers: a stored run's snapshot, state and one workflow execution."""

from __future__ import annotations

import pytest
from themis.core.errors import RunNotFoundError
from themis.core.inspection import (
    get_evaluation_execution,
    get_execution_state,
    get_run_snapshot,
)
from themis.core.results import RunStatus
from themis.core.snapshot import RunSnapshot
from themis.core.stores import InMemoryRunStore
from themis.testing._run_events import (
    RunEvents,
    execution_payload,
    json_blob,
    sample_run,
    sample_snapshot,
)

UNKNOWN = "0" * 64


@pytest.fixture
def snapshot() -> RunSnapshot:
    return sample_snapshot(datasets=("alpha", "beta"))


@pytest.fixture
def store(snapshot: RunSnapshot) -> InMemoryRunStore:
    store = InMemoryRunStore()
    store.persist_snapshot(snapshot)
    return store


def test_get_run_snapshot_returns_the_stored_snapshot(
    store: InMemoryRunStore, snapshot: RunSnapshot
) -> None:
    assert get_run_snapshot(store, snapshot.run_id) == snapshot


@pytest.mark.parametrize("read", [get_run_snapshot, get_execution_state])
def test_unknown_run_raises_run_not_found(store: InMemoryRunStore, read: object) -> None:
    with pytest.raises(RunNotFoundError, match=f"Unknown run_id: {UNKNOWN}"):
        read(store, UNKNOWN)  # type: ignore[operator]


def test_unknown_run_has_no_evaluation_execution(store: InMemoryRunStore) -> None:
    with pytest.raises(RunNotFoundError, match=f"Unknown run_id: {UNKNOWN}"):
        get_evaluation_execution(store, UNKNOWN, case_id="c1", metric_id="test/judge")


def test_get_execution_state_folds_every_stored_event(
    store: InMemoryRunStore, snapshot: RunSnapshot
) -> None:
    store.append_events(snapshot.run_id, sample_run(snapshot))
    state = get_execution_state(store, snapshot.run_id)
    assert state.status is RunStatus.PARTIAL_FAILURE
    assert state.case_states["5:alpha:c2"].parse_error == "not JSON"


def test_evaluation_execution_is_found_by_case_and_metric(
    store: InMemoryRunStore, snapshot: RunSnapshot
) -> None:
    store.append_events(snapshot.run_id, sample_run(snapshot))
    execution = get_evaluation_execution(
        store, snapshot.run_id, case_id="c1", metric_id="test/judge", dataset_id="alpha"
    )
    assert execution is not None and execution.execution_id == "exec:test/judge"


def test_without_dataset_id_the_dataset_holding_an_execution_answers(
    store: InMemoryRunStore, snapshot: RunSnapshot
) -> None:
    ev = RunEvents(snapshot)
    store.append_events(
        snapshot.run_id, [ev.evaluated("c1", "test/judge", 0.25, dataset_id="beta")]
    )
    execution = get_evaluation_execution(
        store, snapshot.run_id, case_id="c1", metric_id="test/judge"
    )
    assert execution is not None and execution.scores[0].value == 0.25
    assert (
        get_evaluation_execution(
            store, snapshot.run_id, case_id="c1", metric_id="test/judge", dataset_id="alpha"
        )
        is None
    )


def test_missing_execution_is_none(store: InMemoryRunStore, snapshot: RunSnapshot) -> None:
    store.append_events(snapshot.run_id, sample_run(snapshot))
    assert (
        get_evaluation_execution(store, snapshot.run_id, case_id="c2", metric_id="test/judge")
        is None
    )
    assert (
        get_evaluation_execution(store, snapshot.run_id, case_id="c1", metric_id="test/exact")
        is None
    )


def test_rejudge_replaces_and_clears_the_execution(
    store: InMemoryRunStore, snapshot: RunSnapshot
) -> None:
    ev = RunEvents(snapshot)
    store.append_events(
        snapshot.run_id,
        [
            ev.evaluated("c1", "test/judge", 0.0),
            ev.replay("judge"),
            ev.evaluated("c1", "test/judge", 1.0),
        ],
    )
    execution = get_evaluation_execution(
        store, snapshot.run_id, case_id="c1", metric_id="test/judge"
    )
    assert execution is not None and execution.scores[0].value == 1.0
    store.append_events(snapshot.run_id, [ev.replay("judge", ["test/judge"])])
    assert (
        get_evaluation_execution(store, snapshot.run_id, case_id="c1", metric_id="test/judge")
        is None
    )


def test_an_execution_stored_as_a_blob_is_loaded(
    store: InMemoryRunStore, snapshot: RunSnapshot
) -> None:
    ref = store.store_blob(json_blob(execution_payload("test/judge", 0.75)), "application/json")
    ev = RunEvents(snapshot)
    store.append_events(snapshot.run_id, [ev.evaluated("c1", "test/judge", blob_ref=ref)])
    execution = get_evaluation_execution(
        store, snapshot.run_id, case_id="c1", metric_id="test/judge"
    )
    assert execution is not None and execution.scores[0].value == 0.75
