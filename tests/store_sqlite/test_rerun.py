"""Running a finished run again (policy auto) in a new process is one read of its result."""

from __future__ import annotations

import gc
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from themis import Experiment
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.models import Case, Dataset, GenerationResult
from themis.core.projections import build_projection
from themis.core.results import RunResult
from themis.core.snapshot import RunSnapshot
from themis_store_sqlite import SqliteRunStore


class Echo:
    """Answers each case with its input and counts the calls."""

    component_id = "test/echo"
    version = "1"

    def __init__(self) -> None:
        self.calls = 0

    def fingerprint(self) -> str:
        return "echo"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        self.calls += 1
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.input)


class CountingStore(SqliteRunStore):
    """Counts the snapshots it decodes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.snapshots_loaded = 0

    def load_snapshot(self, run_id: str) -> RunSnapshot | None:
        self.snapshots_loaded += 1
        return super().load_snapshot(run_id)


def _experiment(generator: Echo, n: int = 30) -> Experiment:
    cases = [Case(case_id=f"c{i}", input=str(i), expected_output=str(i % 3)) for i in range(n)]
    return Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(existing_run_policy="auto"),
        git_commit="test",
    )


def test_rerunning_a_finished_run_reads_neither_its_log_nor_its_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    first_store = SqliteRunStore(path)
    try:
        first = _experiment(Echo()).run(store=first_store)
    finally:
        first_store.close()

    generator = Echo()
    store = CountingStore(path)
    try:
        again = _experiment(generator).run(store=store)
    finally:
        store.close()
    assert again == first
    assert generator.calls == 0
    assert store.events_decoded == 0
    assert store.snapshots_loaded == 0


def test_a_resumed_run_still_reads_its_snapshot(tmp_path: Path) -> None:
    """The existence check only replaces the load when there is nothing to do."""
    path = tmp_path / "runs.sqlite3"
    first_store = SqliteRunStore(path)
    try:
        _experiment(Echo()).run(store=first_store, until_stage="generate")
    finally:
        first_store.close()

    generator = Echo()
    store = CountingStore(path)
    try:
        result = _experiment(generator).run(store=store)
    finally:
        store.close()
    assert result.completed_through_stage == "judge"
    assert generator.calls == 0
    assert store.snapshots_loaded >= 1


def test_a_stored_result_leaves_the_collector_as_it_found_it(tmp_path: Path) -> None:
    """Read back, a stored result is filed as old, but nothing the process froze is released
    and nothing stays frozen."""
    path = tmp_path / "runs.sqlite3"
    first_store = SqliteRunStore(path)
    try:
        _experiment(Echo()).run(store=first_store)
    finally:
        first_store.close()

    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    store = SqliteRunStore(path)
    try:
        again = _experiment(Echo()).run(store=store)
    finally:
        store.close()
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    first_case = again.cases[0]  # read back when first used (``CaseList``)
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    oldest = {id(obj) for obj in gc.get_objects(generation=2)}
    assert id(again) in oldest
    assert id(first_case) in oldest

    kept = [[index] for index in range(100)]
    gc.freeze()  # what a server does before it forks
    try:
        store = SqliteRunStore(path)
        try:
            _experiment(Echo()).run(store=store)
        finally:
            store.close()
        scanned = {id(obj) for obj in gc.get_objects()}  # every generation but the frozen
        assert not any(id(obj) in scanned for obj in [kept, *kept])
    finally:
        gc.unfreeze()
    assert id(kept) in {id(obj) for obj in gc.get_objects()}


def test_a_store_knows_a_run_without_decoding_its_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    writer = SqliteRunStore(path)
    try:
        result = _experiment(Echo()).run(store=writer)
    finally:
        writer.close()
    store = CountingStore(path)
    try:
        assert store._has_snapshot(result.run_id)
        assert not store._has_snapshot("no-such-run")
        assert store.snapshots_loaded == 0
        store.clear_run(result.run_id)
        assert not store._has_snapshot(result.run_id)
    finally:
        store.close()


def test_a_store_hands_back_the_snapshot_it_wrote_without_decoding_it(
    open_store: Callable[..., SqliteRunStore], snapshot: RunSnapshot
) -> None:
    """The run's store folds with the snapshot it was given, not a second decoded copy."""
    writer = open_store()
    writer.persist_snapshot(snapshot)
    assert writer.load_snapshot(snapshot.run_id) is snapshot
    reader = open_store()
    assert reader.load_snapshot(snapshot.run_id) == snapshot
    assert reader.load_snapshot(snapshot.run_id) is not snapshot


def test_a_snapshot_written_again_after_a_clear_is_the_new_one(
    open_store: Callable[..., SqliteRunStore], snapshot: RunSnapshot
) -> None:
    store = open_store()
    store.persist_snapshot(snapshot)
    other = open_store()
    other.clear_run(snapshot.run_id)
    copy = snapshot.model_copy()
    other.persist_snapshot(copy)
    assert store.load_snapshot(snapshot.run_id) == snapshot
    assert store.load_snapshot(snapshot.run_id) is not snapshot  # read from the file again


def _stored_result_text(path: Path, run_id: str) -> str:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT json FROM projections WHERE run_id = ? AND name = 'run_result'", (run_id,)
        ).fetchone()
    text: str = zlib.decompress(
        row[0], -zlib.MAX_WBITS
    ).decode()  # kept compressed (schema version 4)
    return text


def test_the_run_persists_its_result_without_default_fields(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(path)
    try:
        result = _experiment(Echo()).run(store=store)
    finally:
        store.close()
    text = _stored_result_text(path, result.run_id)
    assert '"trace":null' not in text
    assert '"generation_failures":{}' not in text
    assert RunResult.model_validate_json(text) == result


def test_a_new_store_reads_the_shortened_result_as_the_whole_payload(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    writer = SqliteRunStore(path)
    try:
        result = _experiment(Echo()).run(store=writer)
        events = writer.query_events(result.run_id)
        snapshot = writer.load_snapshot(result.run_id)
    finally:
        writer.close()
    assert snapshot is not None
    reader = SqliteRunStore(path)
    try:
        payload = reader.get_projection(result.run_id, "run_result")
        assert reader.events_decoded == 0
    finally:
        reader.close()
    assert payload == build_projection("run_result", snapshot, events)
    assert payload == result.model_dump(mode="json")
