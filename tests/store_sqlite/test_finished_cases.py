"""A SQLite run's folder lets go of its finished cases (``compress_finished``): the run holds
few cases as models, hands back a result whose cases are read when used, and writes at
rest the texts a folder that kept every case writes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from themis.core._case_list import CaseList
from themis.core._fold_state import decode_fold_state
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.errors import StoreError
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset
from themis.core.projections import build_projection
from themis.core.results import RunResult
from themis.core.stores import blob_payload_loader
from themis.testing import FakeGenerator
from themis_builtins import ExactMatch
from themis_store_sqlite import SqliteRunStore

N_CASES = 40
CHUNK = 6


@pytest.fixture(autouse=True)
def _chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SqliteRunStore, "finished_chunk", CHUNK)


class Flaky(FakeGenerator):
    """Fails cases c2 and c33 until told otherwise, under one fingerprint."""

    def __init__(self) -> None:
        super().__init__(fail_on={"c2", "c33"})

    def fingerprint(self) -> str:
        return "flaky"


def _experiment(**runtime: Any) -> Experiment:
    cases = [Case(case_id=f"c{i}", input=f"q{i}", expected_output=f"a{i}") for i in range(N_CASES)]
    return Experiment(
        generation=GenerationConfig(generator=Flaky()),
        evaluation=EvaluationConfig(metrics=[ExactMatch()]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(generation_retry_attempts=1, max_concurrent_tasks=8, **runtime),
        git_commit="test",
    )


def _folded(store: SqliteRunStore, run_id: str, name: str) -> Any:
    """Projection ``name`` folded from the stored log by a folder that keeps every case."""
    snapshot = store.load_snapshot(run_id)
    assert snapshot is not None
    events = store.query_events(run_id)
    return build_projection(name, snapshot, events, load_payload=blob_payload_loader(store))


def test_a_run_hands_back_its_cases_compressed_and_the_same(tmp_path: Path) -> None:
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    try:
        result = _experiment().run(store=store)
        run_id = result.run_id
        folder = store.projection_folder(run_id)
        assert folder is not None and folder._finished is not None
        # Every case finished: all but the last partial chunk were let go of.
        assert folder._finished.count == N_CASES - N_CASES % CHUNK
        assert len(folder._state.case_states) == N_CASES % CHUNK
        assert type(result.cases) is CaseList and not result.cases.loaded
        assert len(result.cases) == N_CASES
        assert result.progress.failed_cases == 2
        expected = _folded(store, run_id, "run_result")
        assert result.model_dump(mode="json") == expected
        # The writer's store answers every projection as a fold of the log does.
        for name in ("run_result", "execution_state", "benchmark_result"):
            assert store.get_projection(run_id, name) == _folded(store, run_id, name)
    finally:
        store.close()


def test_the_texts_at_rest_are_those_of_every_case(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(path)
    try:
        run_id = _experiment().run(store=store).run_id
        expected_result = _folded(store, run_id, "run_result")
        expected_state = _folded(store, run_id, "execution_state")
    finally:
        store.close()
    reader = SqliteRunStore(path)
    try:
        text = reader._projection_json(run_id, "run_result")
        assert text is not None
        assert RunResult.model_validate_json(text).model_dump(mode="json") == expected_result
        assert json.loads(text) == RunResult.model_validate(expected_result).model_dump(
            mode="json", exclude_defaults=True
        )
        # The fold state kept at rest, read back as a resume would.
        state_text = reader._persisted_text(run_id, "execution_state")
        assert state_text is not None
        kept = decode_fold_state(state_text)
        assert kept.state.model_dump(mode="json") == expected_state
        # A re-run in another store is the same result, read from the text.
        again = _experiment(existing_run_policy="auto").run(store=reader)
        assert again.model_dump(mode="json") == expected_result
    finally:
        reader.close()


def test_a_resume_in_the_same_store_retries_the_cases_let_go_of(tmp_path: Path) -> None:
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    try:
        first = _experiment().run(store=store)
        assert first.progress.failed_cases == 2
        folder = store.projection_folder(first.run_id)
        assert folder is not None and folder._finished is not None
        # c2 failed among the cases let go of; a resume reads the state and retries it.
        assert folder._finished.count > 2
        healed = _experiment(existing_run_policy="resume")
        # The same generator, failing no more.
        generator = healed.generation.generator
        assert isinstance(generator, FakeGenerator)
        generator.fail_on = FakeGenerator().fail_on
        second = healed.run(store=store)
        assert second.run_id == first.run_id
        assert second.progress.completed_cases == N_CASES
        assert second.model_dump(mode="json") == _folded(store, first.run_id, "run_result")
    finally:
        store.close()


def _clean(experiment: Experiment) -> Experiment:
    """``experiment`` with its generator failing no case: a run of it completes."""
    generator = experiment.generation.generator
    assert isinstance(generator, FakeGenerator)
    generator.fail_on = FakeGenerator().fail_on
    return experiment


def test_a_rerun_hands_back_the_stored_result_reading_its_cases_when_used(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(path)
    try:
        first = _clean(_experiment()).run(store=store)
        expected = first.model_dump(mode="json")
    finally:
        store.close()
    reader = SqliteRunStore(path)
    try:
        again = _clean(_experiment(existing_run_policy="auto")).run(store=reader)
        assert type(again.cases) is CaseList and not again.cases.loaded
        assert len(again.cases) == N_CASES
        assert again.model_dump(mode="json") == expected
    finally:
        reader.close()
    # A kept text cut short: its first line still reads, its cases do not.
    with sqlite3.connect(path) as conn:
        (value,) = conn.execute(
            "SELECT json FROM projections WHERE run_id = ? AND name = 'run_result'",
            (first.run_id,),
        ).fetchone()
        conn.execute(
            "UPDATE projections SET json = ? WHERE run_id = ? AND name = 'run_result'",
            (value[: len(value) * 2 // 3], first.run_id),
        )
    reader = SqliteRunStore(path)
    try:
        cut = _clean(_experiment(existing_run_policy="auto")).run(store=reader)
        assert len(cut.cases) == N_CASES
        with pytest.raises(StoreError, match=r"runs\.sqlite3.*existing_run_policy='resume'"):
            cut.cases[0]
        # Resumed, the run folds its result from its events and keeps it again.
        healed = _clean(_experiment(existing_run_policy="resume")).run(store=reader)
        assert healed.model_dump(mode="json") == expected
    finally:
        reader.close()
