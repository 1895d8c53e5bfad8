"""Read one stored run: its snapshot, its folded state, one workflow execution."""

from __future__ import annotations

from typing import TYPE_CHECKING

from themis.core.case_refs import case_key_for
from themis.core.errors import RunNotFoundError
from themis.core.results import ExecutionState
from themis.core.stores import blob_payload_loader

if TYPE_CHECKING:
    from themis.core.protocols import RunStore
    from themis.core.snapshot import RunSnapshot
    from themis.core.workflows import EvaluationExecution

__all__ = ["get_evaluation_execution", "get_execution_state", "get_run_snapshot"]

# The events that decide which execution a (case, metric) holds now.
_EVALUATION_EVENTS = frozenset({"evaluation_completed", "evaluation_failed", "replay_started"})


def _unknown(run_id: str, store: RunStore) -> RunNotFoundError:
    return RunNotFoundError(
        f"Unknown run_id: {run_id}; {type(store).__name__} holds no snapshot for it "
        "(check the run id and the store it was written to)"
    )


def get_run_snapshot(store: RunStore, run_id: str) -> RunSnapshot:
    """The stored snapshot of ``run_id``; ``RunNotFoundError`` when there is none."""
    snapshot = store.load_snapshot(run_id)
    if snapshot is None:
        raise _unknown(run_id, store)
    return snapshot


def get_execution_state(store: RunStore, run_id: str) -> ExecutionState:
    """The run's ``ExecutionState`` folded from every stored event."""
    stored = store.resume(run_id)
    if stored is None:
        raise _unknown(run_id, store)
    return ExecutionState.from_events(
        run_id,
        stored.events,
        snapshot=stored.snapshot,
        load_payload=blob_payload_loader(store),
    )


def get_evaluation_execution(
    store: RunStore,
    run_id: str,
    *,
    case_id: str,
    metric_id: str,
    dataset_id: str | None = None,
) -> EvaluationExecution | None:
    """The current execution of ``metric_id`` on a case, or None when it has none.

    Without ``dataset_id``, the first dataset (in snapshot order) holding ``case_id`` with
    such an execution answers.
    """
    snapshot = get_run_snapshot(store, run_id)
    events = store.query_events(run_id, event_types=_EVALUATION_EVENTS)
    state = ExecutionState.from_events(
        run_id, events, snapshot=snapshot, load_payload=blob_payload_loader(store)
    )
    if dataset_id is not None:
        keys = [case_key_for(dataset_id, case_id)]
    else:
        keys = [
            case_key_for(dataset.dataset_id, case_id)
            for dataset in snapshot.datasets
            if any(case.case_id == case_id for case in dataset.cases)
        ]
    # Legacy events without a dataset id are keyed by the bare case id.
    keys.append(case_id)
    for key in keys:
        case_state = state.case_states.get(key)
        if case_state is not None and metric_id in case_state.evaluation_executions:
            return case_state.evaluation_executions[metric_id]
    return None
