"""Bundles: stage and whole-run exports that another store imports into equal projections."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from themis.core import bundles
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.errors import RunNotFoundError
from themis.core.events import RunEvent
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset
from themis.core.stores import InMemoryRunStore
from themis.testing import FakeGenerator, FakeJudge
from themis_builtins import ExactMatch, JsonIdentity, LLMRubric, MajorityVote, PairwiseJudge
from themis_store_sqlite import SqliteRunStore

STAGES = ("generation", "reduction", "parse", "score", "evaluation")


def _verdict(prompt: str) -> str:
    return "A because it is shorter" if "Candidate A:" in prompt else "PASS it is right"


class CountingStore(InMemoryRunStore):
    """Counts ``append_events`` calls, to check that an import is one atomic append."""

    def __init__(self) -> None:
        super().__init__()
        self.appends = 0

    def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None:
        self.appends += 1
        super().append_events(run_id, events)


def _run(inline_limit: int = 262_144, n: int = 3, store: Any = None) -> tuple[Any, str]:
    dataset = Dataset(
        dataset_id="sample",
        cases=[Case(case_id=f"c{i}", input=f"q{i}", expected_output=f"a{i}") for i in range(n)],
    )
    experiment = Experiment(
        generation=GenerationConfig(
            generator=FakeGenerator(),
            candidate_policy={"num_samples": 2},
            reducer=MajorityVote(),
        ),
        evaluation=EvaluationConfig(
            metrics=[ExactMatch(), LLMRubric(), PairwiseJudge()],
            parsers=[JsonIdentity()],
            judge_models=[FakeJudge(_verdict, component_id="test/judge")],
        ),
        datasets=[dataset],
        runtime=RuntimeConfig(inline_payload_limit=inline_limit),
    )
    store = InMemoryRunStore() if store is None else store
    result = experiment.run(store=store)
    assert result.status.value == "completed"
    return store, result.run_id


def _as_json(bundle: Any) -> dict[str, Any]:
    """The bundle as a file would carry it."""
    loaded: dict[str, Any] = json.loads(json.dumps(bundle.model_dump(mode="json")))
    return loaded


def _export_all(store: InMemoryRunStore, run_id: str) -> dict[str, dict[str, Any]]:
    return {k: _as_json(getattr(bundles, f"export_{k}_bundle")(store, run_id)) for k in STAGES}


def _import_all(store: InMemoryRunStore, exported: dict[str, dict[str, Any]]) -> None:
    for kind in STAGES:
        getattr(bundles, f"import_{kind}_bundle")(store, exported[kind])


# --------------------------------------------------------------- stage bundles
@pytest.mark.parametrize("inline_limit", [262_144, 64], ids=["inline", "blobs"])
def test_stage_bundles_rebuild_the_same_projections_in_another_store(inline_limit: int) -> None:
    source, run_id = _run(inline_limit)
    target = CountingStore()
    _import_all(target, _export_all(source, run_id))
    assert target.appends == len(STAGES)  # one append per bundle
    for name in ("benchmark_result", "trace_view"):
        assert target.get_projection(run_id, name) == source.get_projection(run_id, name)
    assert (
        target.get_projection(run_id, "run_result")["cases"]
        == source.get_projection(run_id, "run_result")["cases"]
    )
    events = target.query_events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert not [e for e in events if e.event_type.startswith("run_")]


def test_payloads_exported_as_blobs_are_imported_as_blobs() -> None:
    source, run_id = _run(inline_limit=64)
    exported = _export_all(source, run_id)
    refs = [r["result_blob_ref"] for r in exported["generation"]["records"]]
    assert refs and all(r and r.startswith("sha256:") for r in refs)
    assert all(r["execution_blob_ref"] for r in exported["evaluation"]["records"])
    target = InMemoryRunStore()
    _import_all(target, exported)
    (first,) = target.query_events(run_id, event_types=["generation_completed"])[:1]
    assert first.result is None and first.result_blob_ref == refs[0]  # type: ignore[attr-defined]
    assert target.load_blob(refs[0]) == source.load_blob(refs[0])


def test_a_stage_bundle_has_the_documented_shape() -> None:
    source, run_id = _run()
    bundle = _export_all(source, run_id)["evaluation"]
    assert set(bundle) == {"schema_version", "bundle_kind", "run_id", "snapshot", "records"}
    assert (bundle["schema_version"], bundle["bundle_kind"], bundle["run_id"]) == (
        "1",
        "evaluation",
        run_id,
    )
    record = bundle["records"][0]
    assert set(record) == {
        "case_id",
        "dataset_id",
        "case_key",
        "metric_id",
        "candidate_id",
        "execution_blob_ref",
        "execution",
    }
    assert record["execution"]["rendered_prompts"][0]["content"]


def test_an_evaluation_import_appends_the_final_score() -> None:
    source, run_id = _run(n=1)
    target = InMemoryRunStore()
    bundles.import_evaluation_bundle(target, _export_all(source, run_id)["evaluation"])
    pairs = [(e.event_type, e.metric_id) for e in target.query_events(run_id)]  # type: ignore[attr-defined]
    # Each execution is followed by its metric's final score.
    assert [t for t, _ in pairs] == ["evaluation_completed", "score_completed"] * 2
    assert pairs[0][1] == pairs[1][1] and pairs[2][1] == pairs[3][1]
    assert {m for _, m in pairs} == {"builtin/llm_rubric", "builtin/pairwise_judge"}
    events = target.query_events(run_id)
    scores = {
        e.metric_id: e.score["value"]  # type: ignore[attr-defined]
        for e in events
        if e.event_type == "score_completed"
    }
    assert scores == {"builtin/llm_rubric": 1.0, "builtin/pairwise_judge": 1.0}


def test_imports_continue_the_stored_seq_and_persist_a_missing_snapshot() -> None:
    source, run_id = _run(n=1)
    exported = _export_all(source, run_id)
    target = InMemoryRunStore()
    assert target.load_snapshot(run_id) is None
    result = bundles.import_generation_bundle(target, exported["generation"])
    assert (result.run_id, result.bundle_kind, result.records, result.events) == (
        run_id,
        "generation",
        2,
        2,
    )
    assert target.load_snapshot(run_id) == source.load_snapshot(run_id)
    bundles.import_reduction_bundle(target, exported["reduction"])
    assert [e.seq for e in target.query_events(run_id)] == [1, 2, 3]


def test_a_bundle_without_a_kind_is_accepted_when_the_caller_states_it() -> None:
    source, run_id = _run(n=1)
    legacy = _export_all(source, run_id)["parse"]
    del legacy["bundle_kind"]
    target = InMemoryRunStore()
    assert bundles.import_parse_bundle(target, legacy).bundle_kind == "parse"
    with pytest.raises(ValueError, match="has no bundle_kind"):
        bundles.import_bundle(InMemoryRunStore(), legacy)
    assert bundles.import_bundle(InMemoryRunStore(), legacy, kind="parse").records == 1


def test_a_legacy_record_without_a_dataset_resolves_its_unique_case() -> None:
    source, run_id = _run(n=1)
    legacy = _export_all(source, run_id)["score"]
    for record in legacy["records"]:
        del record["dataset_id"], record["case_key"]
    target = InMemoryRunStore()
    bundles.import_score_bundle(target, legacy)
    (event,) = target.query_events(run_id)
    assert (event.dataset_id, event.case_key) == ("sample", "6:sample:c0")  # type: ignore[attr-defined]


# -------------------------------------------------------------- clear errors
def test_a_bundle_of_another_kind_is_refused() -> None:
    source, run_id = _run(n=1)
    exported = _export_all(source, run_id)
    with pytest.raises(ValueError, match="this is a 'score' bundle, not a 'parse' one"):
        bundles.import_parse_bundle(InMemoryRunStore(), exported["score"])
    assert bundles.import_bundle(InMemoryRunStore(), exported["score"]).bundle_kind == "score"


def test_a_bundle_whose_run_id_does_not_match_its_snapshot_is_refused() -> None:
    source, run_id = _run(n=1)
    bundle = _export_all(source, run_id)["generation"]
    bundle["run_id"] = "f" * 64
    message = f"says run {'f' * 64}, but its snapshot's identity hashes to {run_id}"
    with pytest.raises(ValueError, match=message):
        bundles.import_generation_bundle(InMemoryRunStore(), bundle)


def test_a_record_for_a_case_outside_the_snapshot_is_refused_by_name() -> None:
    source, run_id = _run(n=1)
    bundle = _export_all(source, run_id)["reduction"]
    bundle["records"][0].update(case_id="ghost", case_key="6:sample:ghost")
    target = InMemoryRunStore()
    with pytest.raises(ValueError, match="names case 'ghost'"):
        bundles.import_reduction_bundle(target, bundle)
    assert target.query_events(run_id) == []  # nothing was appended


def test_a_record_for_an_unknown_metric_is_refused() -> None:
    source, run_id = _run(n=1)
    bundle = _export_all(source, run_id)["score"]
    bundle["records"][0]["metric_id"] = "builtin/f1"
    with pytest.raises(ValueError, match="names metric 'builtin/f1'"):
        bundles.import_score_bundle(InMemoryRunStore(), bundle)


def test_a_payload_that_does_not_match_its_blob_ref_is_refused() -> None:
    source, run_id = _run(inline_limit=64, n=1)
    bundle = _export_all(source, run_id)["generation"]
    bundle["records"][0]["result"]["final_output"] = "tampered"
    with pytest.raises(ValueError, match="bundle was edited after export"):
        bundles.import_generation_bundle(InMemoryRunStore(), bundle)


def test_exporting_an_unknown_run_names_it() -> None:
    with pytest.raises(RunNotFoundError, match="0" * 64):
        bundles.export_score_bundle(InMemoryRunStore(), "0" * 64)


# ----------------------------------------------------------------- run bundles
def test_a_run_bundle_round_trips_every_projection(tmp_path: Path) -> None:
    source, run_id = _run(inline_limit=64)
    path = tmp_path / "run.jsonl"
    count = bundles.export_run_bundle(source, run_id, path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["bundle_kind"] == "run" and lines[0]["run_id"] == run_id
    assert [line["record"] for line in lines[1:]].count("event") == count
    assert [line["record"] for line in lines[1:]].count("blob") > 0
    target = InMemoryRunStore()
    result = bundles.import_run_bundle(target, path)
    assert (result.bundle_kind, result.events) == ("run", count)
    for name in (
        "snapshot",
        "run_result",
        "benchmark_result",
        "timeline_view",
        "trace_view",
        "execution_state",
    ):
        assert target.get_projection(run_id, name) == source.get_projection(run_id, name), name
    # Importing the same bundle again changes nothing: the seqs are already there.
    bundles.import_run_bundle(target, path)
    assert len(target.query_events(run_id)) == count


def test_bundles_move_a_run_between_sqlite_stores_with_equal_projections(tmp_path: Path) -> None:
    """The same round trips between SQLite files, whose projections are folded as events
    are appended and persisted at rest rather than built on read."""
    source, run_id = _run(inline_limit=64, store=SqliteRunStore(tmp_path / "source.db"))
    by_stage = SqliteRunStore(tmp_path / "stages.db")
    _import_all(by_stage, _export_all(source, run_id))
    for name in ("benchmark_result", "trace_view"):
        assert by_stage.get_projection(run_id, name) == source.get_projection(run_id, name), name
    assert (
        by_stage.get_projection(run_id, "run_result")["cases"]
        == source.get_projection(run_id, "run_result")["cases"]
    )
    path = tmp_path / "run.jsonl"
    bundles.export_run_bundle(source, run_id, path)
    whole = SqliteRunStore(tmp_path / "whole.db")
    bundles.import_run_bundle(whole, path)
    for name in (
        "snapshot",
        "run_result",
        "benchmark_result",
        "timeline_view",
        "trace_view",
        "execution_state",
    ):
        assert whole.get_projection(run_id, name) == source.get_projection(run_id, name), name
    for store in (source, by_stage, whole):
        store.close()


def _run_bundle_lines() -> tuple[str, list[dict[str, Any]]]:
    source, run_id = _run(inline_limit=64, n=1)
    buffer = io.StringIO()
    bundles.export_run_bundle(source, run_id, buffer)
    return run_id, [json.loads(line) for line in buffer.getvalue().splitlines()]


def _import_lines(lines: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    bundles.import_run_bundle(InMemoryRunStore(), io.StringIO(text))


def test_a_run_bundle_missing_a_blob_is_refused() -> None:
    _, lines = _run_bundle_lines()
    with pytest.raises(ValueError, match="reference blobs it does not carry"):
        _import_lines([line for line in lines if line.get("record") != "blob"])


def test_a_run_bundle_with_a_corrupt_blob_is_refused() -> None:
    _, lines = _run_bundle_lines()
    blob = next(line for line in lines if line.get("record") == "blob")
    blob["data"] = "dGFtcGVyZWQ="
    with pytest.raises(ValueError, match=f"holds blob {blob['ref']}, but its bytes hash to"):
        _import_lines(lines)


def test_a_run_bundle_with_an_event_of_another_run_is_refused() -> None:
    run_id, lines = _run_bundle_lines()
    lines[1]["event"]["run_id"] = "e" * 64
    with pytest.raises(ValueError, match=f"every event must belong to run {run_id}"):
        _import_lines(lines)


def test_a_stage_bundle_is_not_a_run_bundle() -> None:
    source, run_id = _run(n=1)
    stage = _export_all(source, run_id)["parse"]
    with pytest.raises(ValueError, match="not a run bundle"):
        _import_lines([stage])
    with pytest.raises(ValueError, match="import it with import_run_bundle"):
        bundles.import_bundle(InMemoryRunStore(), {**stage, "bundle_kind": "run"})
