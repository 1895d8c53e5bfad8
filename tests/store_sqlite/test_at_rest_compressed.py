"""Projections kept at rest are BLOBs, raw deflate streams (schema version 4), of the same
bytes as the uncompressed encode; the TEXT rows of earlier versions are still read."""

from __future__ import annotations

import sqlite3
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_serializer
from themis.core._fold_state import encode_fold_state
from themis.core._result_text import run_result_from_json
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.events import CaseFailedEvent, RunCompletedEvent, RunEvent, RunStartedEvent
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset
from themis.core.projections import build_projection
from themis.core.results import RunResult
from themis.core.stores import blob_payload_loader
from themis.testing import FakeGenerator
from themis_builtins import ExactMatch, LLMRubric
from themis_store_sqlite import SqliteRunStore, _at_rest, _schema

N_CASES = 25


class Generator(FakeGenerator):
    """``FakeGenerator`` that counts its calls."""

    def __init__(self) -> None:
        super().__init__(fail_on={"c3", "c17"})
        self.count = 0

    async def generate(self, case: Case, ctx: Any) -> Any:
        self.count += 1
        return await super().generate(case, ctx)


class Judge:
    """Passes every prompt but those of cases q5 and q6, which raise."""

    component_id = "test/judge"
    version = "1.0"
    blocking = False

    def fingerprint(self) -> str:
        return "judge"

    def judge(self, prompt: str, *, seed: int | None = None) -> str:
        if "\nq5\n" in prompt or "\nq6\n" in prompt:
            raise ValueError("the judge refuses this one")
        return "PASS"


def _experiment(generator: FakeGenerator | None = None) -> Experiment:
    cases = [Case(case_id=f"c{i}", input=f"q{i}", expected_output=f"a{i}") for i in range(N_CASES)]
    return Experiment(
        generation=GenerationConfig(generator=generator or Generator()),
        evaluation=EvaluationConfig(metrics=[ExactMatch(), LLMRubric()], judge_models=[Judge()]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(
            existing_run_policy="auto",
            generation_retry_attempts=1,
            judge_retry_attempts=1,
            retry_jitter=0.0,
        ),
        git_commit="test",
    )


def _inflate(value: bytes) -> bytes:
    """A stored BLOB's text: a raw deflate stream."""
    return zlib.decompress(value, -zlib.MAX_WBITS)


def _rows(path: Path, run_id: str) -> dict[str, tuple[str, Any]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name, typeof(json), json FROM projections WHERE run_id = ?", (run_id,)
        ).fetchall()
    return {name: (kind, value) for name, kind, value in rows}


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several chunks per text, and a last one that is not full; the folder lets go of its
    # finished cases as many at a time, so that its segments are lines of the same length.
    monkeypatch.setattr(_at_rest, "CHUNK", 4)
    monkeypatch.setattr(SqliteRunStore, "finished_chunk", 4)


@pytest.mark.usefixtures("small_chunks")
def test_the_texts_at_rest_are_compressed_blobs_of_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(path)
    try:
        result = _experiment().run(store=store)
        run_id = result.run_id
        # A resume that fails a case at its parse stage: the fold state's header keeps the
        # stage's rank (the bookkeeping encode_fold_state writes around the state).
        last = store._last_seq(run_id)
        keys = {"run_id": run_id, "case_id": "c1", "dataset_id": "d", "case_key": "1:d:c1"}
        tail: list[RunEvent] = [
            RunStartedEvent(run_id=run_id, mode="resume"),
            CaseFailedEvent(**keys, stage="parse", error_message="internal"),
            RunCompletedEvent(run_id=run_id),
        ]
        store.acquire_run(run_id)
        store.append_events(
            run_id, [e.model_copy(update={"seq": last + i}) for i, e in enumerate(tail, 1)]
        )
        store.release_run(run_id)
        folder = store.projection_folder(run_id)
        assert folder is not None
        fold_state = encode_fold_state(folder)
        assert fold_state is not None
        run_result = folder.run_result().model_dump_json(exclude_defaults=True)
    finally:
        store.close()
    assert result.progress.failed_cases == 4
    assert '"case_error_ranks":{"1:d:c1":3}' in fold_state
    rows = _rows(path, run_id)
    assert rows.keys() == {"execution_state", "run_result"}
    assert rows["execution_state"][0] == rows["run_result"][0] == "blob"
    assert _inflate(rows["execution_state"][1]) == fold_state.encode()
    # The result's cases are a chunk to a line (JSON whitespace), the same JSON otherwise.
    stored = _inflate(rows["run_result"][1])
    lines = stored.split(b"\n")
    assert len(lines) == 2 + (N_CASES + 3) // 4
    assert lines[0].endswith(b'"cases":[') and lines[-1] == b"]}"
    assert all(line.startswith(b'{"case_id":') for line in lines[1:-1])
    assert [line.count(b'{"case_id":') for line in lines[1:-1]] == [4] * 6 + [1]
    assert stored.replace(b"\n", b"") == run_result.encode()
    assert run_result_from_json(stored) == RunResult.model_validate_json(run_result)
    assert len(rows["execution_state"][1]) < len(fold_state) // 3


@pytest.mark.usefixtures("small_chunks")
def test_the_texts_at_rest_are_encoded_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lengths: list[int] = []
    dump = BaseModel.model_dump_json
    at_rest = False

    def recorded(model: BaseModel, **kwargs: Any) -> str:
        text = dump(model, **kwargs)
        if at_rest:
            lengths.append(len(text))
        return text

    persist = SqliteRunStore._persist_result_at_rest

    def persist_recorded(store: SqliteRunStore, run_id: str) -> None:
        nonlocal at_rest
        at_rest = True
        try:
            persist(store, run_id)
        finally:
            at_rest = False

    adapter_dump = TypeAdapter.dump_json

    def adapter_recorded(adapter: TypeAdapter[Any], value: Any, **kwargs: Any) -> bytes:
        text = adapter_dump(adapter, value, **kwargs)
        if at_rest:
            lengths.append(len(text))
        return text

    monkeypatch.setattr(BaseModel, "model_dump_json", recorded)
    monkeypatch.setattr(TypeAdapter, "dump_json", adapter_recorded)
    monkeypatch.setattr(SqliteRunStore, "_persist_result_at_rest", persist_recorded)
    path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(path)
    try:
        run_id = _experiment().run(store=store).run_id
    finally:
        store.close()
    whole = max(len(_inflate(value)) for _, value in _rows(path, run_id).values())
    assert lengths
    assert max(lengths) < whole // 3


def test_a_model_whose_collection_is_not_its_last_field_is_encoded_whole() -> None:
    class Item(BaseModel):
        n: int
        tag: str = "x"

    class Listed(BaseModel):
        items: list[Item] = Field(default_factory=list)
        name: str = "n"

    class Last(BaseModel):
        name: str
        items: dict[str, Item] = Field(default_factory=dict)

    items = [Item(n=i, tag="y" if i % 2 else "x") for i in range(10)]
    for model, field in [
        (Listed(items=items, name="m"), "items"),
        (Last(name="m", items={f"k{i}": item for i, item in enumerate(items)}), "items"),
        (Last(name="m"), "items"),  # left out at its default
    ]:
        blob = _at_rest.compressed_model(model, field)
        assert _inflate(blob) == model.model_dump_json(exclude_defaults=True).encode()


class _Span(BaseModel):
    n: int
    took: timedelta = timedelta(0)


class _Wrapped(BaseModel):
    """A model-level serializer, as ``RunResult``'s: its chunks go through an adapter."""

    name: str
    items: list[_Span] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        return handler(self)


class _WrappedFloatTimes(BaseModel):
    """The same, with items whose writing the model's config changes (floats)."""

    model_config = ConfigDict(ser_json_timedelta="float")

    name: str
    items: list[timedelta] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        return handler(self)


def test_a_model_serializer_s_chunks_are_encoded_by_an_adapter_when_it_writes_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_at_rest, "CHUNK", 4)
    items = [_Span(n=i, took=timedelta(seconds=i % 3)) for i in range(10)]
    chunks_by_model: list[str] = []
    field_json = _at_rest._field_json

    def by_model(model: BaseModel, field: str, chunk: Any, prefix: bytes, suffix: bytes) -> bytes:
        chunks_by_model.append(type(model).__name__)
        return field_json(model, field, chunk, prefix, suffix)

    monkeypatch.setattr(_at_rest, "_field_json", by_model)
    times = [timedelta(seconds=i % 3) for i in range(10)]
    for model, model_chunks in [
        (_Wrapped(name="m", items=items), 1),
        (_WrappedFloatTimes(name="m", items=times), 1 + 3),
    ]:
        chunks_by_model.clear()
        cls = type(model)
        for lines in (False, True):
            blob = _inflate(_at_rest.compressed_model(model, "items", lines=lines))
            assert blob.replace(b"\n", b"") == model.model_dump_json(exclude_defaults=True).encode()
        # The adapter is checked on one item by the model's way; where the two differ (the
        # config writes timedeltas as floats), every chunk is encoded the model's way.
        assert chunks_by_model == [cls.__name__] * model_chunks * 2


def test_a_fold_state_laid_out_otherwise_is_encoded_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unstreamable(*args: Any, **kwargs: Any) -> None:
        raise _at_rest._Unstreamable

    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    try:
        result = _experiment().run(store=store)
        folder = store.projection_folder(result.run_id)
        assert folder is not None
        assert folder._finished is not None and folder._finished.count > 0
        monkeypatch.setattr(_at_rest, "_write_model", unstreamable)
        blob = _at_rest.compressed_fold_state(folder)
        assert blob is not None
        # The whole state, the cases let go of read back into it.
        assert _inflate(blob).decode() == encode_fold_state(folder)
    finally:
        store.close()


def _as_version_3(path: Path) -> None:
    """Rewrite a file as version 3 wrote it: the same tables and JSON, TEXT rows."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT run_id, name, json FROM projections").fetchall()
        conn.executemany(
            "UPDATE projections SET json = ? WHERE run_id = ? AND name = ?",
            [(_inflate(value).decode(), run_id, name) for run_id, name, value in rows],
        )
        conn.execute("PRAGMA user_version = 3")


def test_a_version_3_file_opens_resumes_and_reads_its_text_rows(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(path)
    try:
        result = _experiment().run(store=store)
    finally:
        store.close()
    run_id = result.run_id
    _as_version_3(path)
    texts = _rows(path, run_id)
    assert {kind for kind, _ in texts.values()} == {"text"}

    reader = SqliteRunStore(path)
    try:
        # From the version 3 rows: no event is decoded for the result, the fold state is
        # continued from (only its last event is read back).
        assert RunResult.model_validate(reader.get_projection(run_id, "run_result")) == result
        assert reader.events_decoded == 0
        assert reader._projection_json(run_id, "run_result") == texts["run_result"][1]
        folder = reader.projection_folder(run_id)
        assert folder is not None
        assert reader.events_decoded == 1
        assert encode_fold_state(folder) == texts["execution_state"][1]
    finally:
        reader.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == _schema.SCHEMA_VERSION == 4
    assert _rows(path, run_id) == texts  # migrated without rewriting them

    # The resume plans from the version 3 fold state: only the two cases whose generation
    # failed are generated again (and fail again); the run comes to rest and keeps
    # compressed rows.
    generator = Generator()
    resumer = SqliteRunStore(path)
    try:
        again = _experiment(generator).run(store=resumer)
        assert resumer.events_decoded < len(resumer.query_events(run_id)) // 4
        folder = resumer.projection_folder(run_id)
        assert folder is not None
        fold_state = encode_fold_state(folder)
    finally:
        resumer.close()
    assert generator.count == 2
    assert again.progress == result.progress
    rows = _rows(path, run_id)
    assert rows["execution_state"][0] == rows["run_result"][0] == "blob"
    assert fold_state is not None
    assert _inflate(rows["execution_state"][1]) == fold_state.encode()
    assert RunResult.model_validate_json(_inflate(rows["run_result"][1])) == again


@pytest.mark.parametrize("name", ["run_result", "execution_state"])
def test_an_unreadable_blob_is_folded_from_the_log_instead(tmp_path: Path, name: str) -> None:
    path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(path)
    try:
        result = _experiment().run(store=store)
        events = store.query_events(result.run_id)
        snapshot = store.load_snapshot(result.run_id)
    finally:
        store.close()
    assert snapshot is not None
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE projections SET json = ? WHERE name = ?", (b"not zlib", name))
        if name == "execution_state":
            conn.execute("DELETE FROM projections WHERE name = 'run_result'")
    reader = SqliteRunStore(path)
    try:
        assert reader._projection_json(result.run_id, "run_result") is None
        assert reader.get_projection(result.run_id, "run_result") == build_projection(
            "run_result", snapshot, events, load_payload=blob_payload_loader(reader)
        )
        # The result is built from the kept fold state (only its last event read back),
        # or, when that is the unreadable one, from the whole log.
        assert reader.events_decoded == (1 if name == "run_result" else len(events))
    finally:
        reader.close()
