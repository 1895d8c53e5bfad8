"""``SqliteRunStore(writer_process=True)``: a run's batches written and folded by a real child
process, with the same outcome as in process, and a run that survives losing the child."""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from themis.core.config import EvaluationConfig, GenerationConfig
from themis.core.errors import StoreConflictError
from themis.core.events import RunStartedEvent
from themis.core.experiment import Experiment
from themis.core.results import RunResult
from themis_store_sqlite import SqliteRunStore
from themis_store_sqlite._writer_process import UncommittedBatches

SCRIPTS = Path(__file__).parent / "scripts"


@functools.cache
def _crash_run() -> Any:
    spec = importlib.util.spec_from_file_location("_crash_run", SCRIPTS / "crash_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _experiment(path: Path, cases: int) -> Experiment:
    """The crash test's experiment: two candidates a case, a reducer, two metrics."""
    experiment: Experiment = _crash_run().experiment(str(path), cases)
    return experiment


def _ready_store(path: Path) -> SqliteRunStore:
    store = SqliteRunStore(path, writer_process=True)
    # A hang guard, not a speed requirement: the child imports Themis first.
    assert store._wait_writer_ready(60), "the writer process did not start"
    return store


def _events(path: Path, run_id: str) -> list[Any]:
    store = SqliteRunStore(path)
    try:
        return store.query_events(run_id)
    finally:
        store.close()


def _outcome(event: Any) -> tuple[Any, ...]:
    """What an event says, without its time and its provenance (the file's path)."""
    data = event.model_dump(mode="json", exclude={"occurred_at", "run_id", "provenance"})
    data.pop("duration_ms", None)
    return tuple(sorted((key, repr(value)) for key, value in data.items()))


class _Seen:
    """A subscriber that records the seq of every event it is shown, and checks now and
    then that the event is in the file already (observers see committed batches only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seqs: list[int] = []
        self.ahead_of_the_file: list[int] = []

    def on_event(self, event: Any) -> None:
        self.seqs.append(event.seq)
        if len(self.seqs) % 97 == 0 and _stored_seq(self.path) < event.seq:
            self.ahead_of_the_file.append(event.seq)

    def assert_saw_each_once(self, events: list[Any]) -> None:
        assert sorted(self.seqs) == [e.seq for e in events], "an event was shown twice or never"
        assert self.ahead_of_the_file == [], "an event was shown before it was committed"


def _stored_seq(path: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.OperationalError:  # not made yet
        return 0
    try:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    finally:
        conn.close()


def _by_case(events: list[Any]) -> dict[Any, list[tuple[Any, ...]]]:
    """Each case's events in log order (the run's own under None), without seqs."""
    cases: dict[Any, list[tuple[Any, ...]]] = {}
    for event in events:
        data = dict(_outcome(event))
        data.pop("seq", None)
        cases.setdefault(getattr(event, "case_key", None), []).append(tuple(sorted(data.items())))
    return cases


def _assert_exactly_once(events: list[Any], cases: int) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq is not dense"
    generations = Counter(
        (e.case_key, e.candidate_id) for e in events if e.event_type == "generation_completed"
    )
    assert len(generations) == cases * 2 and set(generations.values()) == {1}
    scores = Counter((e.case_key, e.metric_id) for e in events if e.event_type == "score_completed")
    assert len(scores) == cases * 2 and set(scores.values()) == {1}


def test_a_run_through_the_writer_process_stores_what_a_run_in_process_stores(
    tmp_path: Path,
) -> None:
    cases = 400
    here, there = tmp_path / "here.sqlite3", tmp_path / "there.sqlite3"
    plain = SqliteRunStore(here)
    try:
        expected = _experiment(here, cases).run(store=plain)
    finally:
        plain.close()
    store = _ready_store(there)
    child = store._writer_child
    assert child is not None
    seen = _Seen(there)
    try:
        result = _experiment(there, cases).run(store=store, subscribers=[seen])
        assert store._handed_over == {result.run_id}, "no batch went to the writer process"
    finally:
        store.close()
    assert child._process.poll() == 0, "close() leaves the writer process running"

    assert result.run_id == expected.run_id
    assert result.status == expected.status and result.progress == expected.progress
    assert list(result.cases) == list(expected.cases)
    # The log: the same events, each case's in the same order (how the cases interleave
    # depends on the scheduling, in process too), under dense seqs.
    ours, theirs = _events(there, result.run_id), _events(here, expected.run_id)
    assert _by_case(ours) == _by_case(theirs)
    _assert_exactly_once(ours, cases)
    seen.assert_saw_each_once(ours)
    # What a later reader of the file gets, from the texts the child wrote at rest.
    reader = SqliteRunStore(there)
    try:
        at_rest = reader.get_projection(result.run_id, "run_result")
    finally:
        reader.close()
    assert RunResult.model_validate(at_rest) == expected


def _judged(cases: int) -> Experiment:
    """An exact match and a rubric judged by the demo judge, for a rejudge."""
    return Experiment(
        generation=GenerationConfig(generator="builtin/demo_generator"),
        evaluation=EvaluationConfig(
            metrics=["builtin/exact_match", "builtin/llm_rubric"],
            judge_models=["builtin/demo_judge"],
        ),
        datasets=[_crash_run().sums(cases)],
    )


def test_a_rejudge_through_the_writer_process_is_folded_by_the_child_only(
    tmp_path: Path,
) -> None:
    # The run's start is written in process, so that the run plans from the folder it made
    # (started from the fold state at rest). Handed over at its start, the run had that
    # folder made here a second time, and then caught up here with every event the child
    # wrote: the parent folded the whole rejudge again (P7 with the option: 7.8 s against
    # 4.3 s in process).
    cases = 300
    here, there = tmp_path / "here.sqlite3", tmp_path / "there.sqlite3"
    for path in (here, there):
        plain = SqliteRunStore(path)
        try:
            _judged(cases).run(store=plain)
            if path == here:
                expected = _judged(cases).rejudge(store=plain)
        finally:
            plain.close()
    store = _ready_store(there)
    try:
        result = _judged(cases).rejudge(store=store)
        assert store._handed_over == {result.run_id}, "no batch went to the writer process"
        # A few events are read to check that the fold state at rest fits the log; before,
        # every event of the rejudge was (12 a case).
        assert store.events_decoded < 10, "the parent folded events the child wrote"
    finally:
        store.close()
    assert result.status == expected.status and result.progress == expected.progress
    assert [_case_outcome(c) for c in result.cases] == [_case_outcome(c) for c in expected.cases]
    events = _events(there, result.run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq is not dense"
    judged = Counter(
        e.case_key
        for e in events
        if e.event_type == "score_completed" and e.metric_id == "builtin/llm_rubric"
    )
    assert len(judged) == cases and set(judged.values()) == {2}, "one judge score per pass"


def test_a_read_of_a_handed_over_run_midway_leaves_the_rest_to_the_child(
    tmp_path: Path,
) -> None:
    # A read of the run's projections in the parent makes a folder there, which stops where
    # the read was. The result is still the one the child kept at rest, not that folder
    # caught up with every later event here.
    cases = 400
    path = tmp_path / "runs.sqlite3"
    store = _ready_store(path)
    reads: list[int] = []

    class Reader:
        def on_event(self, event: Any) -> None:
            if event.seq == 40:
                payload = store.get_projection(event.run_id, "run_result")
                reads.append(payload["progress"]["completed_cases"])

    try:
        result = _experiment(path, cases).run(store=store, subscribers=[Reader()])
        assert store._handed_over == {result.run_id}, "no batch went to the writer process"
        decoded = store.events_decoded
    finally:
        store.close()
    assert len(reads) == 1 and 0 < reads[0] < cases
    events = _events(path, result.run_id)
    assert 40 <= decoded < len(events) // 2, "the parent folded the rest of the run"
    assert result.progress.completed_cases == cases and len(result.cases) == cases
    _assert_exactly_once(events, cases)


def _case_outcome(case: Any) -> Any:
    """A case's result without its timings (a judge reply records how long it took)."""

    def untimed(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k not in _TIMINGS}
        if isinstance(value, list):
            return [untimed(v) for v in value]
        return value

    return untimed(case.model_dump(mode="json"))


_TIMINGS = frozenset({"latency_ms", "duration_ms"})


def test_a_run_whose_writer_process_is_killed_goes_on_in_process_and_completes(
    tmp_path: Path,
) -> None:
    cases = 3000
    path = tmp_path / "runs.sqlite3"
    store = _ready_store(path)
    child = store._writer_child
    assert child is not None
    outcome: list[Any] = []
    seen = _Seen(path)

    def run() -> None:
        try:
            outcome.append(_experiment(path, cases).run(store=store, subscribers=[seen]))
        except BaseException as exc:  # reported by the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a speed requirement
        while time.monotonic() < deadline and worker.is_alive():
            if _stored_seq(path) >= 2000:
                break
            time.sleep(0.005)
        assert worker.is_alive(), "the run ended before the writer process was killed"
        os.kill(child.pid, signal.SIGKILL)
        worker.join(timeout=300)
    finally:
        worker.join()
        store.close()
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    result = outcome[0]
    assert result.status.value == "completed"
    assert result.progress.completed_cases == cases
    assert result.run_id in store._handed_over, "no batch went to the writer process"
    assert child.failed and child._process.returncode == -signal.SIGKILL
    events = _events(path, result.run_id)
    _assert_exactly_once(events, cases)
    seen.assert_saw_each_once(events)


def test_a_batch_the_writer_process_may_not_write_stops_it_and_names_the_conflict(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.sqlite3"
    holder = SqliteRunStore(path)
    holder.acquire_run("r")  # a live store in this process holds the run's lease
    store = _ready_store(path)
    child = store._writer_child
    assert child is not None
    try:
        child.send(
            "r", store._owner, [RunStartedEvent(run_id="r", seq=1, mode="fresh")], 1, [], False
        )
        with pytest.raises(UncommittedBatches) as caught:
            child.collect(0)
        assert isinstance(caught.value.cause, StoreConflictError)
        assert caught.value.first_seq == 1
        assert "is being executed by another store" in str(caught.value)
        # Nothing after a failed batch may be written: the child has stopped.
        assert child._process.wait(timeout=30) == 1
        assert child.failed
        assert _events(path, "r") == []
    finally:
        store.close()
        holder.close()


def test_a_config_asks_for_the_writer_process_by_its_parameter(tmp_path: Path) -> None:
    from themis.core.config import StorageConfig
    from themis.core.stores import create_run_store

    path = tmp_path / "runs.sqlite3"
    store = create_run_store(
        StorageConfig(store="sqlite", parameters={"path": str(path), "writer_process": True})
    )
    assert isinstance(store, SqliteRunStore) and store.writer_process
    child = store._writer_child
    assert child is not None
    try:
        assert store._wait_writer_ready(60)
    finally:
        store.close()
    assert child._process.poll() == 0
    plain = create_run_store(StorageConfig(store="sqlite", parameters={"path": str(path)}))
    try:
        assert isinstance(plain, SqliteRunStore)
        assert not plain.writer_process and plain._writer_child is None
    finally:
        plain.close()


def test_the_writer_process_is_refused_where_its_pipes_cannot_be_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from themis.core.errors import StoreError
    from themis_store_sqlite import store as store_module

    monkeypatch.setattr(store_module, "_POSIX", False)
    path = tmp_path / "runs.sqlite3"
    with pytest.raises(StoreError, match="needs a POSIX system") as caught:
        SqliteRunStore(path, writer_process=True)
    assert str(path) in str(caught.value)
    SqliteRunStore(path).close()  # without it, the store works as ever
