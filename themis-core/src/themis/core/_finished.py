"""The finished cases a folder has let go of, kept as compressed JSON.

A folder holds each case's state, and once the case has finished its result, as models:
about 4 KB a case, 400 MB for a 100,000-case run, when a SQLite store's folder needs
neither until the run's texts are written at rest and its result is read. A folder asked
to (``ProjectionFolder.compress_finished``) lets go of the cases it has finished, a chunk
at a time in snapshot order, keeping the JSON of their states and of their results as
compressed segments (``_case_list.segment``): about 70 bytes a case. A store writes the
segments at rest as they are (they are pieces of one deflate stream), the run's result
reads its cases from them when they are used (``CaseList``), and an event for a case let
go of takes every case back into the state first (``ProjectionFolder._take_back``).
"""

from __future__ import annotations

from functools import cache

from pydantic import TypeAdapter

from themis.core._case_list import segment, segment_text
from themis.core._fold_speed import paused_gc, set_case_error_rank
from themis.core.results import CaseExecutionState, CaseResult

__all__ = ["FinishedCases"]


@cache
def _states() -> TypeAdapter[dict[str, CaseExecutionState]]:
    return TypeAdapter(dict[str, CaseExecutionState])


@cache
def _results() -> TypeAdapter[list[CaseResult]]:
    return TypeAdapter(list[CaseResult])


class FinishedCases:
    """The first ``count`` cases of a run in snapshot order, finished and compressed.

    ``state_segments`` hold the JSON of their states as ``ExecutionState.case_states``
    dumps it (``"key":{...},...``, no braces), ``result_segments`` the JSON of their
    results as ``RunResult.cases`` does (``{...},...``, no brackets), both with fields at
    their defaults left out; ``ranks`` the private rank of each ``case_error`` among them.
    ``completed`` and ``failed`` count their statuses at ``stage``.
    """

    __slots__ = (
        "chunk",
        "completed",
        "count",
        "failed",
        "ranks",
        "result_segments",
        "stage",
        "state_segments",
        "through",
    )

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.count = 0
        # Cases from ``count`` up to here had a result built when last looked at: a hint
        # of how far the next chunk may go (``add`` is given only checked cases).
        self.through = 0
        self.stage: str | None = None
        self.completed = 0
        self.failed = 0
        self.state_segments: list[bytes] = []
        self.result_segments: list[bytes] = []
        self.ranks: dict[str, int] = {}

    def add(
        self,
        states: dict[str, CaseExecutionState],
        results: list[CaseResult],
        completed: int,
        failed: int,
    ) -> None:
        """Keep the next cases: their states (by key, in snapshot order) and results."""
        for key, state in states.items():
            if state.case_error is not None and (rank := state._case_error_rank):
                self.ranks[key] = rank
        with paused_gc():
            text = _states().dump_json(states, exclude_defaults=True)
            self.state_segments.append(segment(text[1:-1]))
            del text
            text = _results().dump_json(results, exclude_defaults=True)
            self.result_segments.append(segment(text[1:-1]))
        self.count += len(results)
        self.completed += completed
        self.failed += failed

    def states(self) -> dict[str, CaseExecutionState]:
        """The states of the cases kept, as models again, in snapshot order."""
        validate = _states().validate_json
        states: dict[str, CaseExecutionState] = {}
        with paused_gc():
            for data in self.state_segments:
                states.update(validate(b"{" + segment_text(data) + b"}"))
        for key, rank in self.ranks.items():
            set_case_error_rank(states[key], rank)
        return states

    def clear(self) -> None:
        self.count = self.through = self.completed = self.failed = 0
        self.stage = None
        self.state_segments = []
        self.result_segments = []
        self.ranks = {}
