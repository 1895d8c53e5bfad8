"""The texts a run writes at rest are written one at a time, and neither Python nor SQLite
keeps a copy of one once it is in the file (they are written at the run's peak of memory)."""

from __future__ import annotations

import ctypes
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from themis import Experiment
from themis.core.config import EvaluationConfig, GenerationConfig
from themis.core.models import Case, Dataset, GenerationResult
from themis.core.projections import ProjectionFolder
from themis_store_sqlite import SqliteRunStore
from themis_store_sqlite._at_rest import compressed
from themis_store_sqlite._persisted import _HandOff


class Echo:
    component_id = "test/echo"
    version = "1"

    def fingerprint(self) -> str:
        return "echo"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.input)


def _experiment(n: int = 20) -> Experiment:
    cases = [Case(case_id=f"c{i}", input=str(i), expected_output=str(i % 3)) for i in range(n)]
    return Experiment(
        generation=GenerationConfig(generator=Echo()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        git_commit="test",
    )


class RecordingStore(SqliteRunStore):
    """Records the projection texts it writes, in order."""

    def __init__(self, path: Path, steps: list[str]) -> None:
        super().__init__(path)
        self.steps = steps

    def _persist_projection_text(self, run_id: str, name: str, seq: int, text: _HandOff) -> None:
        self.steps.append(f"write {name}")
        super()._persist_projection_text(run_id, name, seq, text)


def test_the_fold_state_is_written_before_the_result_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The result's model is the largest thing a run at rest builds: the fold state's text,
    # the larger of the two, is written and dropped before it exists.
    steps: list[str] = []
    build = ProjectionFolder.run_result

    def recorded(folder: ProjectionFolder) -> Any:
        if folder._run_result is None:
            steps.append("build run_result")
        return build(folder)

    monkeypatch.setattr(ProjectionFolder, "run_result", recorded)
    store = RecordingStore(tmp_path / "runs.sqlite3", steps)
    try:
        _experiment().run(store=store)
    finally:
        store.close()
    assert steps == ["write execution_state", "build run_result", "write run_result"]


def _sqlite_memory_used() -> Any:
    import _sqlite3

    try:
        used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (AttributeError, OSError):
        pytest.skip("the sqlite3 module does not export sqlite3_memory_used")
    used.restype = ctypes.c_int64
    return used


def test_a_written_text_is_stored_as_a_blob_and_not_kept(tmp_path: Path) -> None:
    memory_used = _sqlite_memory_used()
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    try:
        run_id = _experiment().run(store=store).run_id
        seq = store._last_seq(run_id)
        # A compressed text (schema version 4) of about 4 MB: bytes that do not compress.
        text = random.Random(0).randbytes(4_000_000)
        conn = store._open_writer()
        # A few pages of cache, so that the rows' pages do not stay in memory either.
        conn.execute("PRAGMA cache_size=16")
        before = memory_used()
        handed = _HandOff(text)
        store._persist_projection_text(run_id, "run_result", seq, handed)
        after = memory_used()
        assert handed.text is None
        # A text bound as a parameter stays with the cached statement after the write.
        assert after - before < len(text) // 4
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "runs.sqlite3") as db:
        row = db.execute(
            "SELECT typeof(json), json, seq FROM projections WHERE run_id = ? AND name = ?",
            (run_id, "run_result"),
        ).fetchone()
    assert row == ("blob", text, seq)


def test_a_text_for_a_log_that_moved_on_is_dropped_unwritten(tmp_path: Path) -> None:
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    try:
        run_id = _experiment().run(store=store).run_id
        seq = store._last_seq(run_id)
        handed = _HandOff(compressed('{"stale": true}'))
        store._persist_projection_text(run_id, "run_result", seq - 1, handed)
        assert handed.text is None
        with store._reading("test") as conn:
            stored = conn.execute(
                "SELECT seq FROM projections WHERE run_id = ? AND name = 'run_result'",
                (run_id,),
            ).fetchone()
        assert stored == (seq,)  # the run's own result, not the stale text
    finally:
        store.close()
