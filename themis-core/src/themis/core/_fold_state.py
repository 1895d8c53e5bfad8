"""A fold at rest: its state encoded for a store to keep, and a folder that continues from it.

Resuming, replaying or rejudging a run needs its folded state. Decoding and folding the
whole log costs several times more than validating the state a store kept when the run
last came to rest (10,000 judged cases: 4.4 s against 0.8 s), so a store may keep the
encoded state with the ``seq`` it covers and start its folder from it, folding only the
events appended after that ``seq``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_json

from themis.core._fold import Fold
from themis.core._fold_speed import paused_gc, set_case_error_rank
from themis.core.projections import ProjectionFolder
from themis.core.results import CaseExecutionState, ExecutionState

if TYPE_CHECKING:
    from themis.core._fold import PayloadLoader
    from themis.core._projection_cases import CorpusScorer
    from themis.core.events import RunEvent
    from themis.core.snapshot import RunSnapshot

__all__ = [
    "FoldState",
    "ResumedFolder",
    "decode_fold_state",
    "encode_fold_state",
    "fold_state_head",
    "folded_state",
    "resumed_folder",
]

FORMAT = 1


@cache
def _shape() -> str:
    """The names of what a fold keeps, hashed: a state kept by a version of Themis whose
    fold kept other things is not continued from (its log is folded instead)."""
    names = [
        *sorted(ExecutionState.model_fields),
        *sorted(ExecutionState.__private_attributes__),
        *sorted(CaseExecutionState.model_fields),
        *sorted(CaseExecutionState.__private_attributes__),
        *sorted(Fold.__slots__),
    ]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


class _Document(BaseModel):
    """What is stored: the state, what the model's dump leaves out, and the last event."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1]
    shape: str
    # The last event folded: a reader proves with it that the log it continues is this one.
    seq: int
    event_type: str
    occurred_at: datetime
    # The fold's own bookkeeping, private to the models and so not in their dump.
    until_stage: str
    case_error_ranks: dict[str, int]
    state: ExecutionState


@dataclass(frozen=True)
class FoldState:
    """A decoded fold state and the last event it covers."""

    state: ExecutionState
    seq: int
    event_type: str
    occurred_at: datetime

    def continues(self, event: RunEvent) -> bool:
        """Whether ``event`` (read back from the log) is the last event this state folded."""
        return (
            event.seq == self.seq
            and event.event_type == self.event_type
            and event.occurred_at == self.occurred_at
        )


def folded_state(folder: ProjectionFolder) -> ExecutionState:
    """The folder's own state, which its next event changes: read it, never change it.

    ``ProjectionFolder.execution_state()`` hands out a deep copy, which for a large run
    costs as much as the fold; resume planning reads the folder's state instead. The
    folder keeps every case as models from then on (``keep_every_case``): the state is
    read as the run goes.
    """
    folder.keep_every_case()
    state: ExecutionState = folder._state
    return state


def encode_fold_state(folder: ProjectionFolder) -> str | None:
    """The folder's state as JSON text for ``decode_fold_state``; None before any event.

    Fields at their defaults are left out (the model puts them back): a third less text,
    and validating it back takes 40% less time.
    """
    head = fold_state_head(folder, whole=True)
    if head is None:
        return None
    prefix, state = head
    return f"{prefix}{state.model_dump_json(exclude_defaults=True)}}}"


def fold_state_head(
    folder: ProjectionFolder, *, whole: bool = False
) -> tuple[str, ExecutionState] | None:
    """``encode_fold_state``'s text up to its state (ending ``"state":``), and the state
    whose JSON follows it (then ``}``); None before any event.

    The state is the folder's own, without the finished cases it let go of (their JSON
    is in ``folder._finished.state_segments``, to be put among the state's cases), or
    with ``whole`` a copy with them in it. The ranks in the text are every case's.
    """
    last = folder.last_event
    if last is None or last.seq is None:
        return None
    state = folder._whole_state() if whole else folder._state
    ranks = {
        key: rank
        for key, case_state in state.case_states.items()
        if case_state.case_error is not None and (rank := case_state._case_error_rank)
    }
    finished = folder._finished
    if not whole and finished is not None:
        ranks.update(finished.ranks)
    header = to_json(
        {
            "format": FORMAT,
            "shape": _shape(),
            "seq": last.seq,
            "event_type": last.event_type,
            "occurred_at": last.occurred_at,
            "until_stage": state.until_stage,
            "case_error_ranks": ranks,
        }
    ).decode()
    return f'{header[:-1]},"state":', state


def decode_fold_state(
    text: str | bytes,
    *,
    snapshot: RunSnapshot | None = None,
    load_payload: PayloadLoader | None = None,
) -> FoldState:
    """The state ``encode_fold_state`` wrote, ready to fold further events into.

    ``snapshot`` and ``load_payload`` play their part in ``ExecutionState.from_events``.
    Raises ``ValueError`` when the text is not such a state.
    """
    with paused_gc():
        document = _Document.model_validate_json(text)
    if document.shape != _shape():
        raise ValueError(
            "the fold state was kept by a version of Themis whose fold keeps other fields"
        )
    state = document.state
    fold = state._fold
    fold.until_stage = document.until_stage
    fold.load_payload = load_payload
    if snapshot is not None:
        # What ``from_events`` works out, the same way (see there).
        fresh = ExecutionState.from_events(snapshot.run_id, (), snapshot=snapshot)
        fold.workflow_metric_ids = fresh._fold.workflow_metric_ids
    for key, rank in document.case_error_ranks.items():
        case_state = state.case_states.get(key)
        if case_state is not None:
            set_case_error_rank(case_state, rank)
    return FoldState(state, document.seq, document.event_type, document.occurred_at)


class ResumedFolder(ProjectionFolder):
    """A folder that continues from a state folded earlier, up to its last event.

    It has the state, and with it ``execution_state``, ``run_result`` and
    ``benchmark_result``; it has no timeline rows or trace records for the events before
    it was resumed, so its store answers ``timeline_view`` and ``trace_view`` from the log
    (``complete_history`` is False).
    """

    complete_history = False

    def __init__(
        self,
        snapshot: RunSnapshot,
        resumed: FoldState,
        last_event: RunEvent,
        *,
        load_payload: PayloadLoader | None = None,
        corpus_scorers: Mapping[str, CorpusScorer] | None = None,
    ) -> None:
        super().__init__(snapshot, load_payload=load_payload, corpus_scorers=corpus_scorers)
        if not resumed.continues(last_event):
            raise ValueError(
                f"the fold state ends at seq {resumed.seq} ({resumed.event_type}), "
                f"not at the event given, seq {last_event.seq} ({last_event.event_type})"
            )
        self._state = resumed.state
        self._last_seq = resumed.seq
        self._last_item = last_event


def resumed_folder(
    snapshot: RunSnapshot,
    resumed: FoldState,
    events: Sequence[RunEvent],
    *,
    load_payload: PayloadLoader | None = None,
    corpus_scorers: Mapping[str, CorpusScorer] | None = None,
) -> ResumedFolder | None:
    """A folder from ``resumed`` and ``events``, the log from the state's last event on.

    None when the log does not go through that event any more (the run was cleared and
    run again, say): the state is then of another log, and the caller folds the log.
    """
    if not events or not resumed.continues(events[0]):
        return None
    folder = ResumedFolder(
        snapshot,
        resumed,
        events[0],
        load_payload=load_payload,
        corpus_scorers=corpus_scorers,
    )
    folder.apply_all(events[1:])
    return folder
