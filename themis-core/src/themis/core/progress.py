"""Live progress of an execution: counters the case workers bump, snapshots a UI polls."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["ProgressState", "RunProgress", "RunProgressSnapshot"]

ProgressState = Literal["idle", "running", "finished", "aborted"]


@dataclass(frozen=True)
class RunProgressSnapshot:
    """One consistent-enough reading of a ``RunProgress`` (see its docstring)."""

    run_id: str | None
    state: ProgressState
    total_cases: int
    skipped_cases: int
    completed_cases: int
    failed_cases: int
    in_flight: int
    elapsed_s: float

    @property
    def done_cases(self) -> int:
        """Cases with nothing left to do: skipped (already stored), completed or failed."""
        return self.skipped_cases + self.completed_cases + self.failed_cases

    @property
    def remaining_cases(self) -> int:
        """Cases not finished yet, the ones in flight included."""
        return max(0, self.total_cases - self.done_cases)

    @property
    def fraction(self) -> float:
        """``done_cases / total_cases``; 1.0 for a run without cases."""
        return self.done_cases / self.total_cases if self.total_cases else 1.0

    @property
    def throughput(self) -> float:
        """Cases finished per second by this execution (skipped cases do not count)."""
        finished = self.completed_cases + self.failed_cases
        return finished / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the throughput so far; None before the first case finishes."""
        if self.state != "running":
            return 0.0 if self.state == "finished" else None
        rate = self.throughput
        return self.remaining_cases / rate if rate > 0 else None


class RunProgress:
    """A live progress handle for one execution: pass it as ``progress=`` and poll it.

    The case workers update plain integer attributes on the event-loop thread and nothing
    else, so tracking costs a few increments per case. ``snapshot()`` may be called from
    any task or thread, at any rate, while the run executes or after it ended; its fields
    are read one by one, so a reading taken from another thread can be off by a case
    between fields. Passing the handle to another execution resets it.

    Counts cover the cases of the whole run: ``skipped_cases`` had nothing left to do when
    a resume reached them, ``completed_cases`` and ``failed_cases`` finished in this
    execution (failed: a failure event was recorded for the case, as in API §5.6), and
    ``in_flight`` are being processed now.
    """

    __slots__ = (
        "_finished_at",
        "_started_at",
        "completed_cases",
        "failed_cases",
        "in_flight",
        "run_id",
        "skipped_cases",
        "state",
        "total_cases",
    )

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.state: ProgressState = "idle"
        self.total_cases = 0
        self.skipped_cases = 0
        self.completed_cases = 0
        self.failed_cases = 0
        self.in_flight = 0
        self._started_at: float | None = None
        self._finished_at: float | None = None

    def start(self, run_id: str, total_cases: int) -> None:
        """Reset the counters for a new execution of ``run_id`` (called by the runtime)."""
        self.run_id = run_id
        self.total_cases = total_cases
        self.skipped_cases = self.completed_cases = self.failed_cases = self.in_flight = 0
        self._finished_at = None
        self._started_at = time.monotonic()
        self.state = "running"

    def finish(self, *, aborted: bool = False) -> None:
        """Stop the clock: the execution ended or aborted (called by the runtime)."""
        self._finished_at = time.monotonic()
        self.in_flight = 0
        self.state = "aborted" if aborted else "finished"

    def snapshot(self) -> RunProgressSnapshot:
        """The counters now, with the elapsed time that throughput and ETA derive from."""
        started = self._started_at
        if started is None:
            elapsed = 0.0
        else:
            end = self._finished_at
            elapsed = (end if end is not None else time.monotonic()) - started
        return RunProgressSnapshot(
            run_id=self.run_id,
            state=self.state,
            total_cases=self.total_cases,
            skipped_cases=self.skipped_cases,
            completed_cases=self.completed_cases,
            failed_cases=self.failed_cases,
            in_flight=self.in_flight,
            elapsed_s=elapsed,
        )

    def __repr__(self) -> str:
        s = self.snapshot()
        return (
            f"RunProgress(state={s.state!r}, done={s.done_cases}/{s.total_cases}, "
            f"failed={s.failed_cases}, in_flight={s.in_flight})"
        )
