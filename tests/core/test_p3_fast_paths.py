"""The per-case shortcuts of issue 6 (P3 at 512) give what the general paths give."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
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
