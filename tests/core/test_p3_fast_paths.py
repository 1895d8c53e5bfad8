"""The per-case shortcuts of issue 6 (P3 at 512) give what the general paths give."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from themis.core._retry import RetryExhaustedError, RetryPolicy, call_with_retries
from themis.core.errors import NonRetryableError, RetryableError

POLICY = RetryPolicy(attempts=3, delay=0.001, backoff=2.0, jitter=0.0)


def _scripted(outcomes: list[Exception | None]) -> tuple[Any, list[int]]:
    """An async call that raises or answers per attempt, counting its calls."""
    calls: list[int] = []

    async def call(value: str) -> str:
        calls.append(len(calls) + 1)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome
        return f"ok-{value}"

    return call, calls


def _retried(outcomes: list[Exception | None], *, first_here: bool) -> tuple[Any, list[int]]:
    """``call_with_retries`` over ``outcomes``; with ``first_here`` the first attempt is
    made by the caller and its error handed over with ``failed=``, as ``_generate`` does."""
    call, calls = _scripted(outcomes)

    async def main() -> Any:
        if not first_here:
            return await call_with_retries(call, POLICY, args=("x",))
        try:
            return await call("x"), []
        except Exception as first:
            return await call_with_retries(call, POLICY, args=("x",), failed=first)

    try:
        return anyio.run(main), calls
    except RetryExhaustedError as exc:
        return ("exhausted", exc.history, exc.retryable, type(exc.error).__name__), calls


@pytest.mark.parametrize(
    "outcomes",
    [
        [None],
        [RetryableError("flaky #1"), None],
        [RetryableError("flaky #1"), RetryableError("flaky #2"), None],
        [RetryableError("a"), RetryableError("b"), RetryableError("c")],
        [NonRetryableError("no")],
        [RetryableError("a"), NonRetryableError("no")],
        [TimeoutError(), None],
    ],
)
def test_a_first_attempt_made_by_the_caller_gives_the_same_result_and_history(
    outcomes: list[Exception | None],
) -> None:
    assert _retried(outcomes, first_here=True) == _retried(outcomes, first_here=False)


def test_a_failed_first_attempt_counts_against_the_attempts() -> None:
    once = RetryPolicy(attempts=1, delay=0.0, jitter=0.0)

    async def never(value: str) -> str:
        raise AssertionError("no attempt is left after the caller's own")

    async def main() -> Any:
        return await call_with_retries(never, once, args=("x",), failed=RetryableError("a"))

    with pytest.raises(RetryExhaustedError) as info:
        anyio.run(main)
    assert [h["attempt"] for h in info.value.history] == [1]
    assert info.value.retryable is True


def test_the_caller_s_first_attempt_is_attempt_one_of_the_history() -> None:
    (result, history), calls = _retried([RetryableError("a"), None], first_here=True)
    assert result == "ok-x" and calls == [1, 2]
    assert history == [
        {
            "attempt": 1,
            "error_type": "RetryableError",
            "error_message": "a",
            "reason": "explicit",
            "delay_s": 0.001,
        }
    ]


# -- the fold's record handlers build each output as ``rebuild`` does -----------------------

_IDS = {"run_id": "r", "case_id": "c", "dataset_id": "d", "case_key": "d:c"}


def _exact_records() -> list[tuple[Any, ...]]:
    from themis.core._stage_generation import GENERATION_EXACT
    from themis.core._stage_outputs import PARSE_EXACT, REDUCTION_EXACT
    from themis.core._stage_scoring import SCORE_EXACT

    common = {"result_blob_ref": None, "cache_hit": False, "source_run_id": None}
    return [
        GENERATION_EXACT[1](
            _IDS,
            candidate_id="c-candidate-0",
            candidate_index=0,
            seed=1,
            provider_key=None,
            result={
                "candidate_id": "c-candidate-0",
                "final_output": 7,
                "trace": None,
                "conversation": None,
                "artifacts": None,
                "token_usage": {"input_tokens": 3},
                "latency_ms": 1.5,
            },
            **common,
        ),
        REDUCTION_EXACT[1](
            _IDS,
            candidate_id="c-candidate-0",
            source_candidate_ids=["c-candidate-0"],
            result={
                "candidate_id": "c-candidate-0",
                "source_candidate_ids": ["c-candidate-0"],
                "final_output": 7,
                "metadata": {"selected_candidate_id": "c-candidate-0"},
            },
            **common,
        ),
        PARSE_EXACT[1](
            _IDS,
            candidate_id="c-candidate-0",
            result={"value": 7, "format": None, "metadata": {}},
            **common,
        ),
        SCORE_EXACT[1](
            _IDS,
            candidate_id="c-candidate-0",
            metric_id="m",
            score={"metric_id": "m", "value": 1.0, "details": {}},
            cache_hit=False,
            source_run_id=None,
        ),
    ]


def test_record_handlers_fold_as_rebuild_and_the_event_handlers_do() -> None:
    from themis.core._event_log import event_of
    from themis.core._fold import CASE_HANDLERS, RECORD_HANDLERS, Fold
    from themis.core._fold_speed import rebuild
    from themis.core.models import GenerationResult, ParsedOutput, ReducedCandidate, Score
    from themis.core.results import _new_case_state

    records = _exact_records()
    by_records, by_events = _new_case_state(), _new_case_state()
    fold = Fold()
    for seq, record in enumerate(records, start=1):
        handler, key_at = RECORD_HANDLERS[record[0]]
        assert record[key_at] == "d:c"
        handler(fold, by_records, record)
        event = event_of(record, seq)
        CASE_HANDLERS[event.event_type](fold, by_events, event)
    assert by_records == by_events
    assert by_records.model_fields_set == by_events.model_fields_set
    folded = by_records.__dict__
    outputs = [
        (folded["generated_candidates"]["c-candidate-0"], GenerationResult, records[0]),
        (folded["reduced_candidate"], ReducedCandidate, records[1]),
        (folded["parsed_output"], ParsedOutput, records[2]),
        (folded["successful_scores"]["m"], Score, records[3]),
    ]
    for model, cls, record in outputs:
        payload = event_of(record, 1).__dict__["score" if cls is Score else "result"]
        expected = rebuild(cls, dict(payload))
        assert type(model) is cls and model == expected
        assert model.__dict__ is payload, "built around the record's payload, not a copy"
        assert model.__pydantic_fields_set__ is expected.__pydantic_fields_set__
        assert model.__pydantic_extra__ is None and model.__pydantic_private__ is None
        assert model == cls.model_validate(payload)
    assert folded["generated_candidates_by_index"][0] is outputs[0][0]
    assert folded["reduction_error"] is None and folded["parse_error"] is None


# -- the pass-through reduction built around its payload ------------------------------------


class _Echo:
    """Answers each case with the output its input names; records what its metric saw."""

    component_id = "test/echo"
    version = "1.0"

    def __init__(self, outputs: dict[str, Any]) -> None:
        self.outputs = outputs

    def fingerprint(self) -> str:
        return "echo"

    async def generate(self, case: Any, ctx: Any) -> Any:
        from themis.core.models import GenerationResult

        return GenerationResult(
            candidate_id=ctx.candidate_id, final_output=self.outputs[case.case_id]
        )


class _Seen:
    """A pure metric that keeps the parsed value it gets (1.0 when it is None)."""

    component_id = "test/seen"
    version = "1.0"
    metric_family = "pure"

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def fingerprint(self) -> str:
        return "seen"

    def score(self, parsed: Any, case: Any, ctx: Any) -> Any:
        from themis.core.models import Score

        self.seen[case.case_id] = parsed.value
        return Score(metric_id=self.component_id, value=float(parsed.value is None))


class _AsIs:
    """A parser that keeps the reduced output: the pass-through then goes to a component."""

    component_id = "test/as_is"
    version = "1.0"

    def fingerprint(self) -> str:
        return "as-is"

    def parse(self, reduced: Any, ctx: Any) -> Any:
        from themis.core.models import ParsedOutput

        return ParsedOutput(value=reduced.final_output)


def _run_outputs(outputs: dict[str, Any], *, parser: bool) -> tuple[Any, _Seen]:
    from themis.core.config import EvaluationConfig, GenerationConfig
    from themis.core.experiment import Experiment
    from themis.core.models import Case, Dataset
    from themis.core.stores import InMemoryRunStore

    metric = _Seen()
    experiment = Experiment(
        generation=GenerationConfig(generator=_Echo(outputs)),
        evaluation=EvaluationConfig(metrics=[metric], parsers=[_AsIs()] if parser else []),
        datasets=[Dataset(dataset_id="d", cases=[Case(case_id=c, input=c) for c in outputs])],
        git_commit="test",
    )
    return experiment.run(store=InMemoryRunStore()), metric


def test_the_pass_through_gives_a_nan_output_on_as_it_is_not_its_json_form() -> None:
    # JSON mode makes a NaN None: the reduction built around its payload would have
    # passed None on to the metric.
    import math

    outputs = {"n": float("nan"), "s": "x", "i": 3, "f": 0.5, "b": True, "z": None}
    for parser in (False, True):
        result, metric = _run_outputs(outputs, parser=parser)
        assert math.isnan(metric.seen.pop("n"))
        assert metric.seen == {k: v for k, v in outputs.items() if k != "n"}
        assert result.progress.completed_cases == len(outputs)


def test_the_pass_through_reduction_is_the_same_with_or_without_a_component_reading_it() -> None:
    outputs = {"s": "x", "i": 3, "f": 0.5, "b": False, "z": None, "l": [1, {"a": 2}]}
    plain, _ = _run_outputs(outputs, parser=False)
    parsed, _ = _run_outputs(outputs, parser=True)
    for left, right in zip(plain.cases, parsed.cases, strict=True):
        assert left.reduced_candidate == right.reduced_candidate
        assert left.reduced_candidate.__dict__ == {
            "candidate_id": f"{left.case_id}-candidate-0",
            "source_candidate_ids": [f"{left.case_id}-candidate-0"],
            "final_output": outputs[left.case_id],
            "metadata": {"selected_candidate_id": f"{left.case_id}-candidate-0"},
        }
        assert left.parsed_output is not None and right.parsed_output is not None
        assert left.parsed_output.value == right.parsed_output.value
        assert [s.value for s in left.scores] == [s.value for s in right.scores]


# -- the fold's fast path for a case's consecutive records ----------------------------------


def _fold_dump(snapshot: Any, items: list[Any], seqs: list[int]) -> Any:
    from themis.core.projections import ProjectionFolder

    folder = ProjectionFolder(snapshot, keep_timeline=False)
    folder.apply_items(items, seqs)
    return (
        folder.run_result().model_dump(mode="json"),
        folder.execution_state().model_dump(mode="json"),
    )


@pytest.mark.parametrize("stage", ["generate", "reduce", "parse", "score"])
@pytest.mark.parametrize("after", [1, 2, 3])
def test_a_failure_between_a_case_s_records_sends_the_next_ones_down_the_checked_path(
    stage: str, after: int
) -> None:
    from themis.core._event_log import event_of
    from themis.core._fold import RECORD_HANDLERS
    from themis.core.events import CaseFailedEvent

    outputs = {f"c{i}": i for i in range(4)}
    from themis.core.config import EvaluationConfig, GenerationConfig
    from themis.core.experiment import Experiment
    from themis.core.models import Case, Dataset
    from themis.core.stores import InMemoryRunStore

    experiment = Experiment(
        generation=GenerationConfig(generator=_Echo(outputs)),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[
            Dataset(
                dataset_id="d",
                cases=[Case(case_id=c, input=c, expected_output=v) for c, v in outputs.items()],
            )
        ],
        git_commit="test",
    )
    store = InMemoryRunStore()
    run_id = experiment.run(store=store).run_id
    log = store._logs[run_id]
    snapshot = store.load_snapshot(run_id)
    items = list(log._records)
    exact = [
        i for i, item in enumerate(items) if type(item) is tuple and item[0] in RECORD_HANDLERS
    ]
    assert len(exact) == 4 * len(outputs)
    # After the ``after``-th record of case c1, a failure of c1: its later records must be
    # checked against the failed keys again, as their events would be.
    at = [i for i in exact if "c1" in items[i]][after - 1]
    first = event_of(items[at], 1)
    failure = CaseFailedEvent.model_construct(
        run_id=run_id,
        case_id="c1",
        dataset_id="d",
        case_key=first.case_key,
        stage=stage,
        error_message="boom",
        error_type="RuntimeError",
    )
    items.insert(at + 1, failure)
    seqs = list(range(1, len(items) + 1))
    events = [
        event_of(item, seq) if type(item) is tuple else item.model_copy(update={"seq": seq})
        for item, seq in zip(items, seqs, strict=True)
    ]
    assert _fold_dump(snapshot, items, seqs) == _fold_dump(snapshot, events, seqs)


# -- case results built for the cases with no failure, without case_status ------------------


class _SomeFail:
    """Fails the generation of every third case."""

    component_id = "test/some_fail"
    version = "1.0"

    def fingerprint(self) -> str:
        return "some-fail"

    async def generate(self, case: Any, ctx: Any) -> Any:
        from themis.core.models import GenerationResult

        if int(case.case_id[1:]) % 3 == 2:
            raise RuntimeError("no answer")
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.input)


def _reference_results(shape: Any, state: Any, keys: list[str]) -> dict[str, Any]:
    """What ``build_case_results`` built before its shortcut: every case through
    ``case_status`` and ``is_finished``."""
    from themis.core._projection_cases import _case_result, case_status, is_finished

    built: dict[str, Any] = {}
    for key in keys:
        position = shape.positions.get(key)
        cs = state.case_states.get(key)
        if position is None or cs is None or key in built:
            continue
        status = case_status(shape, cs, state.until_stage, key in state._fold.failed_keys)
        if is_finished(shape, cs, status, state.until_stage):
            dataset_id, case_id, _ = shape.cases[position]
            built[key] = (
                _case_result(shape, cs, case_id, dataset_id, key),
                state.until_stage,
                status,
            )
    return built


@pytest.mark.parametrize("until_stage", ["generate", "reduce", "parse", "score", "judge"])
def test_case_results_are_built_as_case_status_and_is_finished_decide(until_stage: str) -> None:
    from themis.core._projection_cases import build_case_results
    from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
    from themis.core.experiment import Experiment
    from themis.core.models import Case, Dataset
    from themis.core.projections import ProjectionFolder
    from themis.core.stores import InMemoryRunStore

    cases = [Case(case_id=f"c{i}", input=str(i % 2), expected_output="1") for i in range(12)]
    experiment = Experiment(
        generation=GenerationConfig(generator=_SomeFail()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match", "builtin/f1"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(generation_retry_attempts=1),
        git_commit="test",
    )
    store = InMemoryRunStore()
    run_id = experiment.run(store=store).run_id
    folder = ProjectionFolder(store.load_snapshot(run_id), keep_timeline=False)
    folder.apply_all(store.query_events(run_id))
    shape, state = folder._shape, folder._state
    keys = list(state.case_states)
    # Pending cases too: one without its parse, one with one score of two, one with none.
    for key, drop in zip(keys[:3], ("parse", "one", "all"), strict=True):
        fields = state.case_states[key].__dict__
        if drop == "parse":
            fields["parsed_output"] = None
        elif drop == "one":
            fields["successful_scores"].pop("builtin/f1")
        else:
            fields["successful_scores"].clear()
    state._fold.until_stage = until_stage
    built: dict[str, Any] = {}
    build_case_results(shape, state, [*keys, "d:unknown"], built)
    expected = _reference_results(shape, state, keys)
    assert list(built) == list(expected)
    for key, (result, stage, status) in built.items():
        want, want_stage, want_status = expected[key]
        assert (stage, status) == (want_stage, want_status)
        assert result.model_dump(mode="json") == want.model_dump(mode="json")
    statuses = {status for _, _, status in built.values()}
    assert "failed" in statuses and "completed" in statuses
    assert len(built) < len(keys) or until_stage in ("generate", "reduce")


# -- payload bounds counted at once for the usual shapes ------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
_outputs = (
    _json_scalars
    | st.lists(_json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=5), _json_scalars, max_size=3)
)


@settings(max_examples=300, deadline=None)
@given(
    output=_outputs,
    candidate_id=st.text(min_size=1, max_size=30),
    latency=st.none() | st.floats(min_value=0, max_value=1e6),
    usage=st.none() | st.dictionaries(st.sampled_from(["input_tokens", "x"]), st.integers(0, 99)),
    artifacts=st.none() | st.just({"k": "v"}),
    limit=st.integers(min_value=0, max_value=1200),
)
def test_generation_units_is_units_of_a_generation_result_s_dump(
    output: Any, candidate_id: str, latency: Any, usage: Any, artifacts: Any, limit: int
) -> None:
    from themis.core._case import _units, generation_units
    from themis.core._fold_speed import output_dump
    from themis.core.models import GenerationResult

    result = GenerationResult(
        candidate_id=candidate_id,
        final_output=output,
        latency_ms=latency,
        token_usage=usage,
        artifacts=artifacts,
    )
    data, _ = output_dump(result)
    assert generation_units(data, limit) == _units(data, limit)


def _general_extra(ids: list[str], selected: str) -> int:
    """``pass_through_extra`` as it was written before its one-candidate shortcut."""
    ids_list = 1 + sum(map(len, ids)) + len(ids)
    metadata = 1 + len("selected_candidate_id") + 1 + len(selected) + 1
    return len("source_candidate_ids") + 1 + ids_list + len("metadata") + 1 + metadata


@given(ids=st.lists(st.text(max_size=20), min_size=1, max_size=4), other=st.text(max_size=20))
def test_pass_through_extra_of_one_candidate_is_the_general_sum(ids: list[str], other: str) -> None:
    from themis.core._stage_outputs import pass_through_extra

    for selected in (ids[0], other):
        assert pass_through_extra(ids, selected) == _general_extra(ids, selected)
        assert pass_through_extra(ids[:1], selected) == _general_extra(ids[:1], selected)


# -- the stages' dumps of the usual outputs, written out at once ----------------------------


class _Varied:
    """Returns a differently shaped result per case, keeping each."""

    component_id = "test/varied"
    version = "1.0"

    def __init__(self) -> None:
        self.made: dict[str, Any] = {}

    def fingerprint(self) -> str:
        return "varied"

    async def generate(self, case: Any, ctx: Any) -> Any:
        from themis.core.models import GenerationResult

        shapes: list[dict[str, Any]] = [
            {"final_output": "plain"},
            {"final_output": 3, "latency_ms": 2.5, "token_usage": {"input_tokens": 4}},
            {"final_output": float("inf")},
            {"final_output": {"nested": [1, 2]}},
            {"final_output": None, "artifacts": {"a": 1}},
            {"final_output": True, "latency_ms": 1.0},
        ]
        made = GenerationResult(candidate_id=ctx.candidate_id, **shapes[int(case.case_id[1:])])
        self.made[case.case_id] = made
        return made


class _Scores:
    """Returns a differently shaped score per case, keeping each."""

    component_id = "test/scores"
    version = "1.0"
    metric_family = "pure"

    def __init__(self) -> None:
        self.made: dict[str, Any] = {}

    def fingerprint(self) -> str:
        return "scores"

    def score(self, parsed: Any, case: Any, ctx: Any) -> Any:
        from themis.core.models import Score

        index = int(case.case_id[1:])
        values: list[dict[str, Any]] = [
            {"value": 1.0},
            {"value": 0.0, "details": {"why": "x"}},
            {"value": 2},
            {"value": float("nan")},
            {"value": 0.5, "metric_id": ""},
            {"value": 0.25},
        ]
        made = Score(**{"metric_id": self.component_id, **values[index]})
        self.made[case.case_id] = made
        return made


def test_the_events_carry_each_output_s_json_dump() -> None:
    from themis.core.config import EvaluationConfig, GenerationConfig
    from themis.core.experiment import Experiment
    from themis.core.models import Case, Dataset
    from themis.core.stores import InMemoryRunStore

    generator, metric = _Varied(), _Scores()
    experiment = Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(metrics=[metric]),
        datasets=[
            Dataset(dataset_id="d", cases=[Case(case_id=f"c{i}", input=i) for i in range(6)])
        ],
        git_commit="test",
    )
    store = InMemoryRunStore()
    run_id = experiment.run(store=store).run_id
    generated = store.query_events(run_id, event_types=["generation_completed"])
    scored = store.query_events(run_id, event_types=["score_completed"])
    assert len(generated) == len(scored) == 6
    for event in generated:
        assert event.result == generator.made[event.case_id].model_dump(mode="json")
    for event in scored:
        made = metric.made[event.case_id]
        if not made.metric_id:
            made = made.model_copy(update={"metric_id": metric.component_id})
        assert event.score == made.model_dump(mode="json")


# -- exact match's score, validated straight -------------------------------------------------


@given(value=_outputs, expected=_outputs)
def test_exact_match_scores_as_the_score_it_would_construct(value: Any, expected: Any) -> None:
    from themis.core.models import Case, ParsedOutput, Score
    from themis_builtins import ExactMatch

    metric = ExactMatch()
    parsed = ParsedOutput(value=value)
    case = Case(case_id="c", input="q", expected_output=expected)
    score = metric.score(parsed, case, None)  # type: ignore[arg-type]
    built = Score(metric_id=metric.component_id, value=float(value == expected))
    assert type(score) is Score
    assert score == built
    assert score.model_fields_set == built.model_fields_set
    assert score.model_dump(mode="json") == built.model_dump(mode="json")
    assert score.details is not built.details  # each score its own details dict


def test_a_case_result_is_built_field_for_field_as_validation_builds_it() -> None:
    from themis.core._fold_speed import Shared
    from themis.core._projection_cases import _case_result
    from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
    from themis.core.experiment import Experiment
    from themis.core.models import Case, Dataset
    from themis.core.projections import ProjectionFolder
    from themis.core.results import CaseResult
    from themis.core.stores import InMemoryRunStore

    cases = [Case(case_id=f"c{i}", input=str(i % 2), expected_output="1") for i in range(9)]
    experiment = Experiment(
        generation=GenerationConfig(generator=_SomeFail()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match", "builtin/f1"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(generation_retry_attempts=1),
        git_commit="test",
    )
    store = InMemoryRunStore()
    run_id = experiment.run(store=store).run_id
    folder = ProjectionFolder(store.load_snapshot(run_id), keep_timeline=False)
    folder.apply_all(store.query_events(run_id))
    shape, state = folder._shape, folder._state
    seen_failure = False
    for dataset_id, case_id, key in shape.cases:
        cs = state.case_states[key]
        result = _case_result(shape, cs, case_id, dataset_id, key)
        assert list(result.__dict__) == list(CaseResult.model_fields)
        assert result.model_fields_set == set(CaseResult.model_fields)
        assert result == CaseResult.model_validate(result.model_dump())
        assert (result.case_id, result.dataset_id, result.case_key) == (case_id, dataset_id, key)
        for name in ("generated_candidate_blob_refs", "generation_failures"):
            value = result.__dict__[name]
            held = cs.__dict__[name]
            assert value == held
            assert (type(value) is Shared) is (not held), name
            assert value is not held or not held
        seen_failure = seen_failure or bool(result.generation_failures)
        assert type(result.evaluation_executions) is list
    assert seen_failure


def test_a_run_result_from_built_cases_is_the_one_built_from_the_state() -> None:
    # build_run_result takes the built entries of the current stage by C-level passes and
    # builds only the cases left (missing, or built for another stage).
    from themis.core._projection_cases import build_case_results, build_run_result
    from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
    from themis.core.experiment import Experiment
    from themis.core.models import Case, Dataset
    from themis.core.projections import ProjectionFolder
    from themis.core.stores import InMemoryRunStore

    cases = [Case(case_id=f"c{i}", input=str(i % 2), expected_output="1") for i in range(12)]
    experiment = Experiment(
        generation=GenerationConfig(generator=_SomeFail()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(generation_retry_attempts=1),
        git_commit="test",
    )
    store = InMemoryRunStore()
    run_id = experiment.run(store=store).run_id
    folder = ProjectionFolder(store.load_snapshot(run_id), keep_timeline=False)
    folder.apply_all(store.query_events(run_id))
    shape, state = folder._shape, folder._state
    keys = list(state.case_states)
    state.case_states[keys[0]].__dict__["parsed_output"] = None  # one pending case
    expected = build_run_result(shape, state).model_dump(mode="json")
    for start in (0, 5):
        built: dict[str, Any] = {}
        build_case_results(shape, state, keys[2:], built)
        stale = built[keys[3]]
        built[keys[3]] = (stale[0], "reduce", stale[2])  # built for another stage
        del built[keys[4]]
        result = build_run_result(shape, state, built, start=start)
        dump = result.model_dump(mode="json")
        want = build_run_result(shape, state, start=start).model_dump(mode="json")
        assert dump == want
        if start == 0:
            assert dump == expected
        # Every case is in ``built`` now, for the stage, as build_case_results leaves it.
        assert all(built[key][1] == state.until_stage for _, _, key in shape.cases[start:])
        assert result.progress.total_cases == len(shape.cases)


@pytest.mark.parametrize(
    "datasets",
    [
        {"d": ["c0", "c1"]},
        {"a:b": ["x:y", "ü", ""], "": ["c"], "12": [], "d": ["c0"]},
        {"sums": [f"c{i}" for i in range(50)], "sums2": [f"c{i}" for i in range(7)]},
    ],
)
def test_a_run_shape_s_cases_and_positions_are_those_of_case_key_for(
    datasets: dict[str, list[str]],
) -> None:
    from themis.core._projection_cases import RunShape
    from themis.core.case_refs import case_key_for
    from themis.core.config import EvaluationConfig, GenerationConfig
    from themis.core.experiment import Experiment
    from themis.core.models import Case, Dataset

    experiment = Experiment(
        generation=GenerationConfig(generator=_SomeFail()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[
            Dataset(
                dataset_id=dataset_id,
                cases=[Case(case_id=c, input="1", expected_output="1") for c in ids],
            )
            for dataset_id, ids in datasets.items()
        ],
        git_commit="test",
    )
    shape = RunShape(experiment.compile())
    expected = [(d, c, case_key_for(d, c)) for d, ids in datasets.items() for c in ids]
    assert shape.cases == expected
    assert shape.positions == {key: index for index, (_, _, key) in enumerate(expected)}
