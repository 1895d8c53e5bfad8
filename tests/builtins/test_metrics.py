"""The answer metrics: exact_match, f1 and choice_accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from themis.core.contexts import ScoreContext
from themis.core.models import Case, ParsedOutput, Score, ScoreError
from themis_builtins import ChoiceAccuracy, ExactMatch, TokenF1

ScoreCtx = Callable[[ParsedOutput, Case], ScoreContext]


def _score(metric: Any, score_ctx: ScoreCtx, value: Any, expected: Any) -> Score | ScoreError:
    parsed = ParsedOutput(value=value)
    case = Case(case_id="case-1", input="q", expected_output=expected)
    result = metric.score(parsed, case, score_ctx(parsed, case))
    assert isinstance(result, (Score, ScoreError))
    return result


def _value(metric: Any, score_ctx: ScoreCtx, value: Any, expected: Any) -> float:
    result = _score(metric, score_ctx, value, expected)
    assert isinstance(result, Score), result
    assert result.metric_id == metric.component_id
    return result.value


# exact_match


def test_exact_match_is_one_for_equal_json_values(score_ctx: ScoreCtx) -> None:
    assert _value(ExactMatch(), score_ctx, {"a": [1, "x"]}, {"a": [1, "x"]}) == 1.0


def test_exact_match_is_zero_for_different_values(score_ctx: ScoreCtx) -> None:
    assert _value(ExactMatch(), score_ctx, "4 ", "4") == 0.0


def test_exact_match_compares_raw_values_not_text(score_ctx: ScoreCtx) -> None:
    assert _value(ExactMatch(), score_ctx, "4", 4) == 0.0
    assert _value(ExactMatch(), score_ctx, None, None) == 1.0


# f1


def test_f1_is_one_for_identical_token_bags(score_ctx: ScoreCtx) -> None:
    assert _value(TokenF1(), score_ctx, "The Cat sat", "sat the cat") == 1.0


def test_f1_counts_repeated_tokens_once_per_occurrence(score_ctx: ScoreCtx) -> None:
    """'the the cat' vs 'the cat': 2 of 3 predicted tokens match, all 2 reference tokens do."""
    result = _score(TokenF1(), score_ctx, "the the cat", "the cat")
    assert isinstance(result, Score)
    assert result.details == {"precision": pytest.approx(2 / 3), "recall": 1.0}
    assert result.value == pytest.approx(0.8)


def test_f1_both_empty_is_one(score_ctx: ScoreCtx) -> None:
    assert _value(TokenF1(), score_ctx, "  ", "") == 1.0


def test_f1_one_side_empty_is_zero(score_ctx: ScoreCtx) -> None:
    assert _value(TokenF1(), score_ctx, "", "cat") == 0.0
    assert _value(TokenF1(), score_ctx, "cat", "") == 0.0


def test_f1_no_overlap_is_zero(score_ctx: ScoreCtx) -> None:
    assert _value(TokenF1(), score_ctx, "dog", "cat") == 0.0


def test_f1_reads_text_of_dict_values(score_ctx: ScoreCtx) -> None:
    assert _value(TokenF1(), score_ctx, {"answer": "Paris"}, {"text": "paris"}) == 1.0


def test_f1_without_expected_output_is_a_no_reference_error(score_ctx: ScoreCtx) -> None:
    result = _score(TokenF1(), score_ctx, "cat", None)
    assert isinstance(result, ScoreError)
    assert result.reason == "no_reference"
    assert "case-1" in str(result.details["message"])


# choice_accuracy


def test_choice_accuracy_ignores_case_and_outer_spaces(score_ctx: ScoreCtx) -> None:
    assert _value(ChoiceAccuracy(), score_ctx, " b ", "B") == 1.0


def test_choice_accuracy_reads_the_choice_key_of_a_dict(score_ctx: ScoreCtx) -> None:
    assert _value(ChoiceAccuracy(), score_ctx, "C", {"choice": "c", "text": "Paris"}) == 1.0


def test_choice_accuracy_is_zero_for_another_choice(score_ctx: ScoreCtx) -> None:
    assert _value(ChoiceAccuracy(), score_ctx, "A", "B") == 0.0


def test_choice_accuracy_is_zero_for_an_invalid_parse(score_ctx: ScoreCtx) -> None:
    assert _value(ChoiceAccuracy(), score_ctx, "", "B") == 0.0


def test_choice_accuracy_dict_without_choice_is_a_no_reference_error(
    score_ctx: ScoreCtx,
) -> None:
    result = _score(ChoiceAccuracy(), score_ctx, "A", {"answer": "A"})
    assert isinstance(result, ScoreError)
    assert result.reason == "no_reference"
    assert '"choice"' in str(result.details["message"])


def test_choice_accuracy_without_expected_output_is_a_no_reference_error(
    score_ctx: ScoreCtx,
) -> None:
    result = _score(ChoiceAccuracy(), score_ctx, "A", None)
    assert isinstance(result, ScoreError) and result.reason == "no_reference"


@pytest.mark.parametrize("metric", [ExactMatch(), TokenF1(), ChoiceAccuracy()])
def test_metric_declares_the_pure_family(metric: Any) -> None:
    assert metric.metric_family == "pure"
