"""Ctrl-C on a real process: a clean stop, a consistent SQLite store, an exactly-once resume.

Run as a script, this module is the interrupted program itself:
``python test_interrupt.py DB CASES KIND`` runs an experiment on the SQLite store at DB.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import anyio
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, GenerationResult, Score

# "A few seconds", with room for a loaded shared machine: a hang guard, not a benchmark.
EXIT_WITHIN_S = 15.0


class SleepyGenerator:
    """Answers after 20 ms: awaited (``async``), in a thread (``blocking``), or hangs for
    a minute in a thread from the 50th call on (``hanging``)."""

    component_id = "test/sleepy"
    version = "1.0"

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls: Counter[str] = Counter()
        if kind == "async":
            self.generate = self._generate_async

    def fingerprint(self) -> str:
        return "sleepy"  # the same run_id whatever the kind, so any kind can resume

    def generate(self, case: Case, ctx: Any) -> GenerationResult:
        self.calls[case.case_id] += 1
        hang = self.kind == "hanging" and sum(self.calls.values()) >= 50
        time.sleep(60 if hang else 0.02)
        return GenerationResult(candidate_id="x", final_output=case.expected_output)

    async def _generate_async(self, case: Case, ctx: Any) -> GenerationResult:
        self.calls[case.case_id] += 1
        await anyio.sleep(0.02)
        return GenerationResult(candidate_id="x", final_output=case.expected_output)


class Metric:
    version = "1.0"
    metric_family = "pure"

    def __init__(self, component_id: str) -> None:
        self.component_id = component_id

    def fingerprint(self) -> str:
        return self.component_id

    def score(self, parsed: Any, case: Case, ctx: Any) -> Score:
        return Score(metric_id=self.component_id, value=float(parsed.value == case.expected_output))


def experiment(generator: SleepyGenerator, cases: int) -> Experiment:
    return Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(metrics=[Metric("test/m1"), Metric("test/m2")]),
        datasets=[
            Dataset(
                dataset_id="sums",
                cases=[
                    Case(case_id=f"case-{i}", input=f"{i}+{i}", expected_output=str(2 * i))
                    for i in range(cases)
                ],
            )
        ],
        runtime=RuntimeConfig(max_concurrent_tasks=16, event_batch_size=64),
    )


def main(db: str, cases: int, kind: str) -> None:
    from themis_store_sqlite import SqliteRunStore

    store = SqliteRunStore(db)
    try:
        print("ready", flush=True)
        result = experiment(SleepyGenerator(kind), cases).run(store=store)
        print(f"finished {result.status.value}", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        raise
    finally:
        store.close()


# ---------------------------------------------------------------------------- the tests


def _stored_seq(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute("SELECT MAX(seq) FROM events").fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        conn.close()
    return int(row[0] or 0)


def _start(db: Path, cases: int, kind: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, str(db), str(cases), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def _interrupt_when(proc: subprocess.Popen[str], db: Path, seq: int) -> float:
    """Send SIGINT once ``seq`` events are stored; return when it was sent."""
    deadline = time.monotonic() + 120
    while _stored_seq(db) < seq:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "the run stored too little in two minutes"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    return time.monotonic()


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line of ``stream``, waiting at most ``timeout`` seconds."""
    found: list[str] = []

    def read() -> None:
        found.append(stream.readline())

    import threading

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0].strip() if found else ""


def _events(db: Path, run_id: str) -> list[Any]:
    from themis_store_sqlite import SqliteRunStore

    store = SqliteRunStore(db)
    try:
        return store.query_events(run_id)
    finally:
        store.close()


def _assert_exactly_once(events: list[Any], cases: int) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq is not dense"
    generations = Counter(
        (e.case_key, e.candidate_id) for e in events if e.event_type == "generation_completed"
    )
    assert len(generations) == cases and set(generations.values()) == {1}
    scores = Counter((e.case_key, e.metric_id) for e in events if e.event_type == "score_completed")
    assert len(scores) == 2 * cases and set(scores.values()) == {1}


def _resume_and_check(db: Path, cases: int, run_id: str) -> None:
    """Resume in this process and check no committed generation is redone."""
    from themis_store_sqlite import SqliteRunStore

    committed = {e.case_id for e in _events(db, run_id) if e.event_type == "generation_completed"}
    generator = SleepyGenerator("async")
    store = SqliteRunStore(db)
    try:
        result = experiment(generator, cases).resume(store=store)
    finally:
        store.close()
    assert result.status.value == "completed"
    assert not committed & set(generator.calls), "a committed generation was redone"
    assert sum(generator.calls.values()) == cases - len(committed)
    events = _events(db, run_id)
    _assert_exactly_once(events, cases)
    modes = [e.mode for e in events if e.event_type == "run_started"]
    assert modes == ["fresh", "resume"]


def _check_interrupted_store(db: Path, run_id: str, cases: int) -> None:
    events = _events(db, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq is not dense"
    last = events[-1]
    assert last.event_type == "run_failed" and last.cancelled is True
    done = sum(e.event_type == "generation_completed" for e in events)
    assert 0 < done < cases, "the interrupt should land mid-run"


def test_sigint_stops_a_real_run_within_seconds_and_a_resume_completes_exactly_once(
    tmp_path: Path,
) -> None:
    for kind in ("async", "blocking"):
        cases = 3000
        db = tmp_path / f"{kind}.sqlite3"
        run_id = experiment(SleepyGenerator(kind), cases).compile().run_id
        proc = _start(db, cases, kind)
        try:
            sent = _interrupt_when(proc, db, seq=400)
            code = proc.wait(timeout=120)
            took = time.monotonic() - sent
            out, err = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # KeyboardInterrupt came out of Experiment.run, and then ended the process.
        assert "interrupted" in out, f"{kind}: {err[-2000:]}"
        assert code == -signal.SIGINT, f"{kind}: exit code {code}: {err[-2000:]}"
        assert took < EXIT_WITHIN_S, f"{kind}: exited {took:.1f}s after Ctrl-C"
        _check_interrupted_store(db, run_id, cases)
        _resume_and_check(db, cases, run_id)


def test_a_second_sigint_exits_at_once_while_hung_threads_would_hold_the_exit(
    tmp_path: Path,
) -> None:
    """The first Ctrl-C stops the run; Python then waits for threads stuck in provider calls
    (a minute here); the second Ctrl-C ends that wait."""
    cases = 2000
    db = tmp_path / "hanging.sqlite3"
    run_id = experiment(SleepyGenerator("hanging"), cases).compile().run_id
    proc = _start(db, cases, "hanging")
    assert proc.stdout is not None
    try:
        # 40 cases are stored (5 events each) only once the calls after them hang.
        _interrupt_when(proc, db, seq=200)
        line = _read_line(proc.stdout, EXIT_WITHIN_S)
        assert line == "interrupted", "the run did not stop on the first Ctrl-C"
        _check_interrupted_store(db, run_id, cases)
        time.sleep(0.5)
        assert proc.poll() is None, "expected the exit to wait for the hung threads"
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
        assert time.monotonic() - second < EXIT_WITHIN_S
        assert code != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _resume_and_check(db, cases, run_id)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
