"""A run at rest keeps its fold state, and a resume, replay or rejudge continues from it."""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest
from themis.core._fold import Fold
from themis.core._fold_state import decode_fold_state
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.events import (
    CaseFailedEvent,
    ReductionCompletedEvent,
    RunCompletedEvent,
    RunEvent,
    RunStartedEvent,
)
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset
from themis.core.projections import PROJECTION_NAMES, build_projection
from themis.core.results import ExecutionState, RunResult
from themis.core.snapshot import RunSnapshot
from themis.core.stores import blob_payload_loader
from themis.testing import FakeGenerator
from themis_builtins import ExactMatch, LLMRubric
from themis_store_sqlite import SqliteRunStore

N_CASES = 40


class Judge:
    """Passes every prompt but those of the cases named in ``fail``, which raise."""

    component_id = "test/judge"
    version = "1.0"
    blocking = False

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = fail
        self.calls = 0

    def fingerprint(self) -> str:
        return "judge"

    def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.calls += 1
        if any(f"\n{marker}\n" in prompt for marker in self.fail):
            raise ValueError("the judge refuses this one")
        return "PASS"


def _experiment(judge: Judge, generator: FakeGenerator | None = None) -> Experiment:
    dataset = Dataset(
        dataset_id="d",
        cases=[
            Case(case_id=f"c{i}", input=f"q{i}", expected_output=f"a{i}") for i in range(N_CASES)
        ],
    )
    return Experiment(
        generation=GenerationConfig(generator=generator or FakeGenerator(fail_on={"c3"})),
        evaluation=EvaluationConfig(metrics=[ExactMatch(), LLMRubric()], judge_models=[judge]),
        datasets=[dataset],
        # Executions go to blobs: a fold state holds their refs, its folder loads them.
        runtime=RuntimeConfig(
            inline_payload_limit=64,
            judge_retry_attempts=1,
            generation_retry_attempts=1,
            retry_jitter=0.0,
        ),
        git_commit="test",
    )


def _kept(path: Path, run_id: str) -> tuple[int, str] | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT seq, json FROM projections WHERE run_id = ? AND name = 'execution_state'",
            (run_id,),
        ).fetchone()
    # Kept compressed (schema version 4).
    return None if row is None else (int(row[0]), zlib.decompress(row[1], -zlib.MAX_WBITS).decode())


def _run_at_rest(path: Path) -> tuple[RunSnapshot, list[RunEvent]]:
    """A finished run with failures of several kinds, written by its own store."""
    store = SqliteRunStore(path)
    try:
        result = _experiment(Judge(fail=("q5", "q6"))).run(store=store)
        snapshot = store.load_snapshot(result.run_id)
        events = store.query_events(result.run_id)
    finally:
        store.close()
    assert snapshot is not None
    assert result.progress.failed_cases == 3  # c3's generation, c5's and c6's judging
    return snapshot, events


def _fresh_fold(store: SqliteRunStore, snapshot: RunSnapshot, events: list[RunEvent]) -> Any:
    return ExecutionState.from_events(
        snapshot.run_id, events, snapshot=snapshot, load_payload=blob_payload_loader(store)
    )


def _assert_same_fold(kept: ExecutionState, fresh: ExecutionState) -> None:
    # Field by field (the states' own ``==`` also compares their fold objects by identity);
    # case states compare their private error rank too.
    assert kept.__dict__ == fresh.__dict__
    for key, case_state in fresh.case_states.items():
        assert kept.case_states[key].__pydantic_private__ == case_state.__pydantic_private__, key
    # What the models' dumps leave out: the fold's bookkeeping.
    for slot in Fold.__slots__:
        if slot != "load_payload":
            assert getattr(kept._fold, slot) == getattr(fresh._fold, slot), slot


def test_a_run_at_rest_keeps_a_fold_state_equal_to_a_fresh_fold_of_its_log(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    snapshot, events = _run_at_rest(path)
    kept = _kept(path, snapshot.run_id)
    assert kept is not None
    seq, text = kept
    assert seq == events[-1].seq
    reader = SqliteRunStore(path)
    try:
        state = decode_fold_state(
            text, snapshot=snapshot, load_payload=blob_payload_loader(reader)
        ).state
        _assert_same_fold(state, _fresh_fold(reader, snapshot, events))
        assert any(cs.evaluation_execution_blob_refs for cs in state.case_states.values())
    finally:
        reader.close()


def test_a_new_store_answers_every_projection_from_the_kept_state(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    snapshot, events = _run_at_rest(path)
    reader = SqliteRunStore(path)
    try:
        folder = reader.projection_folder(snapshot.run_id)
        assert folder is not None
        assert reader.events_decoded == 1  # the state's last event, read back as proof
        for name in PROJECTION_NAMES:
            assert reader.get_projection(snapshot.run_id, name) == build_projection(
                name, snapshot, events, load_payload=blob_payload_loader(reader)
            ), name
    finally:
        reader.close()


def test_events_appended_after_the_kept_state_are_folded_on_top_of_it(tmp_path: Path) -> None:
    """A resume that stopped before coming to rest: its events are the tail of the log."""
    path = tmp_path / "runs.sqlite3"
    snapshot, events = _run_at_rest(path)
    run_id = snapshot.run_id
    keys = {"run_id": run_id, "case_id": "c1", "dataset_id": "d", "case_key": "1:d:c1"}
    candidate = "c1-candidate-0"
    tail: list[RunEvent] = [
        RunStartedEvent(run_id=run_id, mode="resume"),
        # A parse-stage case error: a later reduction (an earlier stage) must not clear it,
        # so the fold state has to carry the error's stage rank.
        CaseFailedEvent(**keys, stage="parse", error_message="internal"),
        # A stage other than the default, which the fold keeps outside the state's fields.
        RunCompletedEvent(run_id=run_id, completed_through_stage="score"),
        RunStartedEvent(run_id=run_id, mode="resume"),
        ReductionCompletedEvent(
            **keys,
            candidate_id=candidate,
            source_candidate_ids=[candidate],
            result={
                "candidate_id": candidate,
                "source_candidate_ids": [candidate],
                "final_output": "a1",
            },
        ),
    ]
    writer = SqliteRunStore(path)
    try:
        writer.acquire_run(run_id)
        last = events[-1].seq or 0
        numbered = [e.model_copy(update={"seq": last + i}) for i, e in enumerate(tail, 1)]
        writer.append_events(run_id, numbered[:3])  # comes to rest: a newer state is kept
        kept = _kept(path, run_id)
        assert kept is not None and kept[0] == last + 3
        at_rest = decode_fold_state(
            kept[1], snapshot=snapshot, load_payload=blob_payload_loader(writer)
        ).state
        _assert_same_fold(at_rest, _fresh_fold(writer, snapshot, [*events, *numbered[:3]]))
        assert at_rest.until_stage == "score"
        writer.append_events(run_id, numbered[3:])  # a resume that never finished
        writer.release_run(run_id)
    finally:
        writer.close()
    assert _kept(path, run_id) == kept
    everything = [*events, *numbered]

    reader = SqliteRunStore(path)
    try:
        folder = reader.projection_folder(run_id)
        assert folder is not None
        assert reader.events_decoded == 3  # the kept state's last event, then the tail
        fresh = _fresh_fold(reader, snapshot, everything)
        assert fresh.case_states["1:d:c1"].case_error == "internal"
        _assert_same_fold(reader.projection_folder(run_id)._state, fresh)  # type: ignore[union-attr]
        for name in PROJECTION_NAMES:
            assert reader.get_projection(run_id, name) == build_projection(
                name, snapshot, everything, load_payload=blob_payload_loader(reader)
            ), name
    finally:
        reader.close()


def test_a_kept_state_of_another_log_is_not_continued(tmp_path: Path) -> None:
    """The event under the state's last seq changed: the state is of another log."""
    path = tmp_path / "runs.sqlite3"
    snapshot, events = _run_at_rest(path)
    run_id = snapshot.run_id
    last = events[-1]
    rewritten = last.model_copy(update={"occurred_at": last.occurred_at.replace(year=2001)})
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE events SET json = ? WHERE run_id = ? AND seq = ?",
            (rewritten.model_dump_json(), run_id, last.seq),
        )
    log = [*events[:-1], rewritten]
    reader = SqliteRunStore(path)
    try:
        assert reader.get_projection(run_id, "run_result") is not None  # not the kept result
        folder = reader.projection_folder(run_id)
        assert folder is not None
        assert reader.events_decoded >= len(log)  # the whole log, folded afresh
        _assert_same_fold(folder._state, _fresh_fold(reader, snapshot, log))
    finally:
        reader.close()


@pytest.mark.parametrize(
    "text",
    ['{"format": 1}', "not json", '{"format": 2, "seq": 1}'],
    ids=["incomplete", "not-json", "unknown-format"],
)
def test_an_unreadable_kept_state_is_folded_from_the_log_instead(tmp_path: Path, text: str) -> None:
    path = tmp_path / "runs.sqlite3"
    snapshot, events = _run_at_rest(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE projections SET json = ? WHERE name = 'execution_state'", (text,))
        conn.execute("DELETE FROM projections WHERE name = 'run_result'")
    reader = SqliteRunStore(path)
    try:
        assert reader.get_projection(snapshot.run_id, "run_result") == build_projection(
            "run_result", snapshot, events, load_payload=blob_payload_loader(reader)
        )
        assert reader.events_decoded == len(events)
    finally:
        reader.close()


def test_a_rejudge_in_a_new_store_starts_from_the_kept_state(tmp_path: Path) -> None:
    """No log is read back but the state's last event; the outcome is the log's fold."""
    path = tmp_path / "runs.sqlite3"
    snapshot, events = _run_at_rest(path)
    generator = FakeGenerator(fail_on={"c3"})
    judge = Judge(fail=("q6",))
    store = SqliteRunStore(path)
    try:
        result = _experiment(judge, generator).rejudge(store=store)
        decoded = store.events_decoded
    finally:
        store.close()
    assert generator.calls == []
    assert judge.calls == N_CASES - 1  # c3 has no generation to judge
    assert decoded < 10
    assert result.progress.failed_cases == 2  # c3 (never generated) and c6

    # A store with no kept state folds the whole log: it must reach the same result.
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM projections")
    reader = SqliteRunStore(path)
    try:
        log = reader.query_events(snapshot.run_id)
        assert len(log) > len(events)
        expected = build_projection(
            "run_result", snapshot, log, load_payload=blob_payload_loader(reader)
        )
        assert result == RunResult.model_validate(expected)
        assert reader.get_projection(snapshot.run_id, "run_result") == expected
    finally:
        reader.close()
