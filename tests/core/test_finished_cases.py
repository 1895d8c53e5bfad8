"""A folder that lets go of its finished cases (``compress_finished``) answers every read as
a folder that keeps them all as models does, and takes them back when an event needs them."""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

import pytest
from pydantic import TypeAdapter
from themis.core._case_list import CaseList, own_cases, segment
from themis.core._fold_state import decode_fold_state, encode_fold_state, folded_state
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.events import CaseFailedEvent, ReplayStartedEvent, RunEvent, ScoreCompletedEvent
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset
from themis.core.projections import ProjectionFolder
from themis.core.results import CaseResult, RunResult
from themis.core.snapshot import RunSnapshot
from themis.core.stores import InMemoryRunStore, blob_payload_loader
from themis.testing import FakeGenerator, FakeJudge
from themis_builtins import ExactMatch, LLMRubric

N_CASES = 30


def _verdict(prompt: str) -> str:
    """Passes every prompt but those of cases q5 and q6, which raise."""
    if "\nq5\n" in prompt or "\nq6\n" in prompt:
        raise ValueError("the judge refuses this one")
    return "PASS"


@pytest.fixture(scope="module")
def logged() -> tuple[RunSnapshot, list[RunEvent], InMemoryRunStore]:
    """A finished run's snapshot and log: some cases fail to generate, two to judge."""
    cases = [Case(case_id=f"c{i}", input=f"q{i}", expected_output=f"a{i}") for i in range(N_CASES)]
    experiment = Experiment(
        generation=GenerationConfig(generator=FakeGenerator(fail_on={"c3", "c17"})),
        evaluation=EvaluationConfig(
            metrics=[ExactMatch(), LLMRubric()], judge_models=[FakeJudge(_verdict)]
        ),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(generation_retry_attempts=1, judge_retry_attempts=1),
        git_commit="test",
    )
    store = InMemoryRunStore()
    run_id = experiment.run(store=store).run_id
    snapshot = store.load_snapshot(run_id)
    assert snapshot is not None
    log = store.query_events(run_id)
    # Case c1 then fails at its parse stage: its state keeps the stage's rank (private).
    at = max(i for i, e in enumerate(log) if getattr(e, "case_id", None) == "c1") + 1
    keys = {"run_id": run_id, "case_id": "c1", "dataset_id": "d", "case_key": "1:d:c1"}
    log.insert(at, CaseFailedEvent(**keys, stage="parse", error_message="internal"))
    log = [event.model_copy(update={"seq": seq}) for seq, event in enumerate(log, 1)]
    return snapshot, log, store


def _folder(
    logged: tuple[RunSnapshot, list[RunEvent], InMemoryRunStore],
    chunk: int | None,
    batch: int = 10,
    events: list[RunEvent] | None = None,
) -> ProjectionFolder:
    snapshot, log, store = logged
    folder = ProjectionFolder(
        snapshot, load_payload=blob_payload_loader(store), keep_timeline=False
    )
    if chunk is not None:
        folder.compress_finished(chunk)
    events = log if events is None else events
    for start in range(0, len(events), batch):
        folder.apply_all(events[start : start + batch])
    return folder


def _same_answers(folder: ProjectionFolder, plain: ProjectionFolder) -> None:
    result = folder.run_result()
    expected = plain.run_result()
    assert len(result.cases) == len(expected.cases)
    assert result.progress == expected.progress
    assert result.status == expected.status
    assert result.model_dump() == expected.model_dump()
    assert result == expected
    assert folder.execution_state().model_dump() == plain.execution_state().model_dump()
    assert folder.benchmark_result() == plain.benchmark_result()
    text = encode_fold_state(folder)
    assert text is not None
    kept = decode_fold_state(text)
    assert kept.state.model_dump() == plain.execution_state().model_dump()
    ranks = {k: cs._case_error_rank for k, cs in plain._state.case_states.items()}
    assert ranks["1:d:c1"] == 3
    assert {k: cs._case_error_rank for k, cs in kept.state.case_states.items()} == ranks
    whole = folder._whole_state().case_states
    assert {k: cs._case_error_rank for k, cs in whole.items()} == ranks


@pytest.mark.parametrize(("chunk", "batch"), [(1, 1), (4, 10), (7, 3), (4, 1000)])
def test_a_folder_that_lets_go_answers_as_one_that_keeps_every_case(
    logged: Any, chunk: int, batch: int
) -> None:
    folder = _folder(logged, chunk, batch)
    plain = _folder(logged, None, batch)
    finished = folder._finished
    assert finished is not None
    # Every case has finished: all but the last partial chunk are compressed.
    assert finished.count == N_CASES - N_CASES % chunk
    assert len(folder._state.case_states) == N_CASES % chunk
    assert finished.completed + finished.failed == finished.count
    cases = folder.run_result().cases
    assert type(cases) is CaseList and not cases.loaded
    assert plain.run_result().progress.failed_cases > 0  # the run has failures to keep
    _same_answers(folder, plain)


def test_a_case_is_let_go_of_only_once_every_case_before_it_has_finished(logged: Any) -> None:
    _, log, _ = logged
    # The log up to the point where case c0's last event is folded, and no further.
    last_of_c0 = max(i for i, e in enumerate(log) if getattr(e, "case_id", None) == "c0")
    folder = _folder(logged, 1, events=log[: last_of_c0 + 1])
    finished = folder._finished
    assert finished is not None
    assert finished.count >= 1
    keys = [key for _, _, key in folder._shape.cases]
    assert keys[0] not in folder._state.case_states
    # The cases after the ones let go of are still models, the first of them unfinished.
    assert keys[finished.count] not in folder._case_results


def test_an_event_for_a_case_let_go_of_takes_every_case_back(logged: Any) -> None:
    _, log, _ = logged
    score = next(
        e
        for e in log
        if isinstance(e, ScoreCompletedEvent)
        and e.case_id == "c0"
        and e.metric_id == "builtin/exact_match"
    )
    changed = score.model_copy(
        update={"seq": log[-1].seq + 1, "score": {**score.score, "value": 0.0}}
    )
    folder = _folder(logged, 4)
    plain = _folder(logged, None)
    assert folder._finished is not None and folder._finished.count == 28
    folder.apply(changed)
    plain.apply(changed)
    first = folder.run_result().cases[0]
    assert [s.value for s in first.scores if s.metric_id == "builtin/exact_match"] == [0.0]
    _same_answers(folder, plain)
    # The cases were taken back, then let go of again with the event's batch.
    assert folder._finished.count == 28


def test_a_replay_takes_every_case_back(logged: Any) -> None:
    _, log, _ = logged
    replay = ReplayStartedEvent(
        run_id=log[0].run_id, seq=log[-1].seq + 1, stage="score", metric_ids=None
    )
    folder = _folder(logged, 4)
    plain = _folder(logged, None)
    folder.apply(replay)
    plain.apply(replay)
    assert plain.run_result().progress.completed_cases == 0  # the scores were cleared
    _same_answers(folder, plain)


def test_a_run_that_reads_the_state_as_it_goes_keeps_every_case(logged: Any) -> None:
    folder = _folder(logged, 4)
    state = folded_state(folder)
    assert folder._finished is None
    assert len(state.case_states) == N_CASES
    folder.compress_finished(4)  # ignored from now on
    assert folder._finished is None
    _same_answers(folder, _folder(logged, None))


# -- CaseList -------------------------------------------------------------------------------

_CASES = TypeAdapter(list[CaseResult])


def _case_list(cases: list[CaseResult], at: int = 3) -> CaseList:
    segments = [
        segment(_CASES.dump_json(cases[:at], exclude_defaults=True)[1:-1]),
        segment(_CASES.dump_json(cases[at:-1], exclude_defaults=True)[1:-1]),
    ]
    return CaseList(segments, len(cases) - 1, cases[-1:])


@pytest.fixture
def cases() -> list[CaseResult]:
    return [
        CaseResult(case_id=f"c{i}", dataset_id="d", case_key=f"d:c{i}", case_error=f"e{i}")
        for i in range(6)
    ]


def test_a_case_list_is_the_list_it_stands_for(cases: list[CaseResult]) -> None:
    listed = _case_list(cases)
    assert isinstance(listed, list)
    assert len(listed) == 6 and bool(listed) and not listed.loaded
    assert listed == cases and listed.loaded
    for use in (
        list,
        lambda c: c[2],
        lambda c: c[1:4],
        lambda c: [*c],
        lambda c: [*reversed(c)],
        lambda c: cases[0] in c,
        lambda c: c.index(cases[4]),
        lambda c: c.count(cases[4]),
        lambda c: c + [],  # noqa: RUF005 (the list's own operators are what is tested)
        lambda c: [] + c,  # noqa: RUF005
        lambda c: c * 2,
        lambda c: repr(c),
        lambda c: pickle.loads(pickle.dumps(c)),
        copy.copy,
        copy.deepcopy,
    ):
        assert use(_case_list(cases)) == use(list(cases))
    other = _case_list(cases)
    assert other != cases[:5] and not other.loaded  # another length: no need to load
    assert _case_list(cases) == _case_list(cases)


def test_a_run_result_dumps_and_validates_a_case_list(cases: list[CaseResult]) -> None:
    expected = RunResult(run_id="r", status="completed", cases=cases)
    result = expected.model_copy(update={"cases": _case_list(cases)})
    assert result.model_dump_json(exclude={"cases"}) == expected.model_dump_json(exclude={"cases"})
    assert not result.cases.loaded  # a dump that leaves the cases out does not load them
    assert result.model_dump_json(exclude_defaults=True) == expected.model_dump_json(
        exclude_defaults=True
    )
    assert result.model_dump(mode="json") == expected.model_dump(mode="json")
    revalidated = RunResult.model_validate({**dict(expected), "cases": _case_list(cases)})
    assert revalidated == expected
    assert RunResult.model_json_schema(mode="serialization") == RunResult.model_json_schema()


def test_own_cases_shares_the_segments_and_not_the_list(cases: list[CaseResult]) -> None:
    listed = _case_list(cases)
    mine = own_cases(listed)
    assert type(mine) is CaseList and not mine.loaded and mine is not listed
    mine.append(cases[0])
    assert len(mine) == 7 and len(listed) == 6
    assert listed == cases
    assert type(own_cases(listed)) is list  # once loaded, a plain copy


def test_a_case_list_loaded_by_two_threads_at_once_holds_its_cases_once(
    cases: list[CaseResult],
) -> None:
    many = cases * 200
    for _ in range(5):
        listed = _case_list(many, at=600)
        barrier = threading.Barrier(2)

        def load(listed: CaseList = listed, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            listed.load()

        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert list.__len__(listed) == len(many)
        assert listed == many
