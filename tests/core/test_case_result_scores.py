"""A case result's scores: each stored outcome reads back as the model it was written from."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from themis.core.models import Score, ScoreError
from themis.core.results import CaseResult, RunResult, RunStatus

SCORE = Score(metric_id="m/a", value=0.5, details={"n": 1})
ERROR = ScoreError(metric_id="m/b", reason="no reference", retryable=True)


def _case(*scores: Score | ScoreError) -> CaseResult:
    return CaseResult(case_id="c", dataset_id="d", case_key="k", scores=list(scores))


@pytest.mark.parametrize("order", [(SCORE, ERROR), (ERROR, SCORE)])
def test_scores_and_score_errors_read_back_as_their_own_models(
    order: tuple[Score | ScoreError, ...],
) -> None:
    result = RunResult(run_id="r", status=RunStatus.PARTIAL_FAILURE, cases=[_case(*order)])
    for back in (
        RunResult.model_validate_json(result.model_dump_json()),
        RunResult.model_validate(result.model_dump(mode="json")),
        RunResult.model_validate(result.model_dump()),
    ):
        assert back == result
        assert [type(s) for s in back.cases[0].scores] == [type(s) for s in order]


def test_an_error_with_only_defaults_is_still_a_score_error() -> None:
    back = CaseResult.model_validate(
        {"case_id": "c", "case_key": "k", "scores": [{"metric_id": "m", "reason": "x"}]}
    )
    assert back.scores == [ScoreError(metric_id="m", reason="x")]


@pytest.mark.parametrize(
    "item",
    [
        {"metric_id": "m", "value": 1.0, "reason": "both"},  # fields of both: neither model
        {"metric_id": "m"},  # fields of neither
        {"metric_id": "m", "value": "high"},  # a score whose value is not a number
    ],
)
def test_an_outcome_that_is_neither_model_is_refused(item: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CaseResult.model_validate({"case_id": "c", "case_key": "k", "scores": [item]})
