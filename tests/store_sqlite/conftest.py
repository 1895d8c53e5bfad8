"""Fixtures for the SQLite store tests: real database files under tmp_path, real runs' events."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from themis.core.events import (
    GenerationCompletedEvent,
    ParseCompletedEvent,
    ReductionCompletedEvent,
    RunCompletedEvent,
    RunEvent,
    RunStartedEvent,
    ScoreCompletedEvent,
)
from themis.core.models import Case, Dataset
from themis.core.snapshot import (
    ComponentRef,
    ComponentRefs,
    DatasetRef,
    RunIdentity,
    RunSnapshot,
)
from themis_store_sqlite import SqliteRunStore

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture(autouse=True)
def _small_finished_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run these tests write lets go of its finished cases three at a time, as a
    run of thousands of cases does a thousand at a time (``compress_finished``): the
    store's answers must not depend on which cases its folder still holds as models."""
    monkeypatch.setattr(SqliteRunStore, "finished_chunk", 3)


def _make_snapshot(n_cases: int = 3, *, label: str = "a") -> RunSnapshot:
    """A small snapshot of ``n_cases`` cases; a different ``label`` gives a different run."""
    generator = ComponentRef(
        component_id="builtin/demo_generator", version="1.0", fingerprint=label
    )
    metric = ComponentRef(component_id="builtin/exact_match", version="1.0", fingerprint="m")
    dataset = Dataset(
        dataset_id="sample",
        cases=[
            Case(case_id=f"case-{i}", input={"q": f"{i}+{i}"}, expected_output=str(2 * i))
            for i in range(n_cases)
        ],
    )
    identity = RunIdentity(
        dataset_refs=[DatasetRef(dataset_id="sample", fingerprint=dataset.compute_hash())],
        generator_ref=generator,
        metric_refs=[metric],
    )
    return RunSnapshot(
        identity=identity,
        component_refs=ComponentRefs(generator=generator, metrics=[metric]),
        datasets=[dataset],
        metric_kinds=["pure"],
    )


def _case_events(run_id: str, snapshot: RunSnapshot, first_seq: int = 2) -> list[RunEvent]:
    """The events of a completed run: run_started, each case's pipeline, run_completed."""
    events: list[RunEvent] = [RunStartedEvent(run_id=run_id, seq=1)]
    for case in snapshot.datasets[0].cases:
        keys = {
            "run_id": run_id,
            "case_id": case.case_id,
            "dataset_id": "sample",
            "case_key": f"6:sample:{case.case_id}",
        }
        cid = f"{case.case_id}-candidate-0"
        output = case.expected_output
        events += [
            GenerationCompletedEvent(
                **keys,
                candidate_id=cid,
                candidate_index=0,
                result={"candidate_id": cid, "final_output": output},
            ),
            ReductionCompletedEvent(
                **keys,
                candidate_id=cid,
                source_candidate_ids=[cid],
                result={"candidate_id": cid, "source_candidate_ids": [cid], "final_output": output},
            ),
            ParseCompletedEvent(**keys, candidate_id=cid, result={"value": output}),
            ScoreCompletedEvent(
                **keys,
                candidate_id=cid,
                metric_id="builtin/exact_match",
                score={"metric_id": "builtin/exact_match", "value": 1.0},
            ),
        ]
    events.append(RunCompletedEvent(run_id=run_id))
    return [
        event.model_copy(update={"seq": index})
        for index, event in enumerate(events, start=first_seq - 1)
    ]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "themis.sqlite3"


@pytest.fixture
def open_store(db_path: Path) -> Iterator[Callable[..., SqliteRunStore]]:
    """Open stores on ``db_path`` (or another path); every one is closed at teardown."""
    opened: list[SqliteRunStore] = []

    def _open(path: Path | str | None = None, **kwargs: float) -> SqliteRunStore:
        target = db_path if path is None else path
        if str(target) != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        store = SqliteRunStore(target, **kwargs)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., SqliteRunStore]) -> SqliteRunStore:
    created = open_store()
    created.initialize()
    return created


@pytest.fixture
def snapshot() -> RunSnapshot:
    return _make_snapshot()


@pytest.fixture
def make_snapshot() -> Callable[..., RunSnapshot]:
    return _make_snapshot


@pytest.fixture
def make_events() -> Callable[..., list[RunEvent]]:
    return _case_events


@pytest.fixture
def script() -> Callable[..., list[str]]:
    """Build the command line that runs ``scripts/<name>`` in a fresh interpreter."""

    def _command(name: str, *args: object) -> list[str]:
        return [sys.executable, str(SCRIPTS / name), *map(str, args)]

    return _command


@pytest.fixture
def script_env() -> dict[str, str]:
    """The environment for helper processes: this one, with output unbuffered."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
