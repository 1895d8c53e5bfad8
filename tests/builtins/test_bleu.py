"""``builtin/bleu``: real BLEU per case and over a corpus (conformance is in its own module)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from themis.core.contexts import ScoreContext
from themis.core.models import Case, ParsedOutput, Score, ScoreError
from themis_builtins import Bleu
from themis_builtins.bleu import BleuStatistics, bleu_from_statistics, closest_ref_len

ScoreCtx = Callable[[ParsedOutput, Case], ScoreContext]


def _score(score_ctx: ScoreCtx, value: Any, expected: Any, **params: Any) -> Score | ScoreError:
    bleu = Bleu(**params)
    parsed = ParsedOutput(value=value)
    case = Case(case_id="case-1", input="", expected_output=expected)
    result = bleu.score(parsed, case, score_ctx(parsed, case))
    assert isinstance(result, (Score, ScoreError))
    return result


def _ok(score_ctx: ScoreCtx, value: Any, expected: Any, **params: Any) -> Score:
    result = _score(score_ctx, value, expected, **params)
    assert isinstance(result, Score), result
    return result


def test_identical_sentence_scores_one(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "The cat sat on the mat.", "The cat sat on the mat.")
    assert score.value == pytest.approx(1.0)
    assert score.metric_id == "builtin/bleu"


def test_details_hold_the_sufficient_statistics(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "the cat is on the mat", "the cat sat on the mat")
    assert score.details == {
        "matches": [5, 3, 1, 0],
        "totals": [6, 5, 4, 3],
        "hyp_len": 6,
        "ref_len": 6,
        "bp": 1.0,
        # exp smoothing: the first order with no match gets 1 / (2 * total)
        "precisions": [5 / 6, 3 / 5, 1 / 4, 1 / 6],
    }
    assert score.value == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25)


def test_matches_are_clipped_by_the_reference_counts(score_ctx: ScoreCtx) -> None:
    """Papineni's example: 'the' x7 against a reference holding 'the' twice gives 2/7."""
    score = _ok(score_ctx, "the the the the the the the", "the cat is on the mat", max_order=1)
    assert score.details["matches"] == [2]
    assert score.value == pytest.approx(2 / 7)


def test_multiple_references_clip_by_the_largest_count_in_any_one(score_ctx: ScoreCtx) -> None:
    refs = ["the cat", "the the dog"]
    score = _ok(score_ctx, "the the the", refs, max_order=1)
    assert score.details["matches"] == [2]


def test_brevity_penalty_uses_the_closest_reference_length(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "a b c", ["a b c d e f", "a b c d", "a"], max_order=1)
    assert score.details["ref_len"] == 4
    assert score.details["bp"] == pytest.approx(math.exp(1 - 4 / 3))
    assert score.value == pytest.approx(math.exp(1 - 4 / 3))


def test_shorter_reference_wins_a_length_tie() -> None:
    assert closest_ref_len(6, [9, 3]) == 3
    assert closest_ref_len(6, [3, 9]) == 3


def test_no_brevity_penalty_for_a_longer_hypothesis(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "a b c d", "a b", max_order=1)
    assert score.details["bp"] == 1.0


def test_effective_order_drops_orders_the_hypothesis_cannot_have(score_ctx: ScoreCtx) -> None:
    """Two tokens have no 3- or 4-grams, so the mean is over orders 1 and 2 only."""
    score = _ok(score_ctx, "hello world", "hello world")
    assert score.details["totals"] == [2, 1, 0, 0]
    assert score.value == pytest.approx(1.0)


def test_empty_hypothesis_scores_zero(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "", "a reference")
    assert score.value == 0.0
    assert score.details["hyp_len"] == 0
    assert score.details["bp"] == 0.0


def test_missing_hypothesis_scores_zero(score_ctx: ScoreCtx) -> None:
    assert _ok(score_ctx, None, "a reference").value == 0.0


def test_no_matching_unigram_scores_zero(score_ctx: ScoreCtx) -> None:
    assert _ok(score_ctx, "apples oranges", "bananas grapes").value == 0.0


@pytest.mark.parametrize(
    "expected",
    [
        "the cat sat",
        ["the cat sat"],
        {"references": ["the cat sat"]},
        {"answer": "the cat sat"},
        ["the cat sat", None],
    ],
    ids=["str", "list", "dict-references", "dict-answer", "list-with-none"],
)
def test_reference_forms_are_accepted(score_ctx: ScoreCtx, expected: Any) -> None:
    assert _ok(score_ctx, "the cat sat", expected).value == pytest.approx(1.0)


def test_dict_references_take_precedence_over_answer(score_ctx: ScoreCtx) -> None:
    expected = {"references": ["x y z"], "answer": "the cat sat"}
    assert _ok(score_ctx, "the cat sat", expected).value == 0.0


@pytest.mark.parametrize(
    "expected",
    [None, [], [None], {"solution": "x"}, 42],
    ids=["none", "empty-list", "only-none", "dict-without-keys", "number"],
)
def test_no_reference_is_a_score_error(score_ctx: ScoreCtx, expected: Any) -> None:
    result = _score(score_ctx, "the cat", expected)
    assert isinstance(result, ScoreError)
    assert result.metric_id == "builtin/bleu"
    assert result.reason == "no_reference"
    assert "case-1" in str(result.details["message"])


def test_non_string_reference_in_a_list_is_a_score_error(score_ctx: ScoreCtx) -> None:
    result = _score(score_ctx, "the cat", ["the cat", 3])
    assert isinstance(result, ScoreError)
    assert "must be a string" in str(result.details["message"])


def test_hypothesis_is_read_with_text_of(score_ctx: ScoreCtx) -> None:
    assert _ok(score_ctx, {"answer": "the cat sat"}, "the cat sat").value == pytest.approx(1.0)


def test_case_matters_unless_lowercase(score_ctx: ScoreCtx) -> None:
    assert _ok(score_ctx, "THE CAT", "the cat").value == 0.0
    assert _ok(score_ctx, "THE CAT", "the cat", lowercase=True).value == pytest.approx(1.0)


def test_13a_splits_punctuation_but_keeps_numbers_whole(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "It costs 1,000.50!", "It costs 1,000.50 !")
    assert score.details["hyp_len"] == 4
    assert score.value == pytest.approx(1.0)


def test_none_tokenizer_splits_on_whitespace_only(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "It costs 1,000.50!", "It costs 1,000.50 !", tokenize="none")
    assert score.details["hyp_len"] == 3
    assert score.value < 1.0


def test_char_tokenizer_counts_characters(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "東京 です", "東京です", tokenize="char")
    assert score.details["hyp_len"] == 4
    assert score.value == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("smooth", "third_precision"),
    [("exp", 1 / (2 * 2)), ("floor", 0.1 / 2), ("add-k", 1 / 3), ("none", 0.0)],
)
def test_smoothing_sets_the_precision_of_an_order_with_no_match(
    score_ctx: ScoreCtx, smooth: str, third_precision: float
) -> None:
    """'a b c d' vs 'a b x d': 3-grams 0 of 2 match; each method credits that differently."""
    score = _ok(score_ctx, "a b c d", "a b x d", smooth=smooth, max_order=3)
    assert score.details["matches"] == [3, 1, 0]
    assert score.details["precisions"][2] == pytest.approx(third_precision)


def test_no_smoothing_gives_zero_when_an_order_has_no_match(score_ctx: ScoreCtx) -> None:
    assert _ok(score_ctx, "a b c d", "a b x d", smooth="none").value == 0.0


def test_smooth_value_overrides_the_default_constant(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "a b c d", "a b x d", smooth="floor", smooth_value=0.5, max_order=3)
    assert score.details["precisions"][2] == pytest.approx(0.25)


def test_corpus_score_sums_statistics_before_the_formula(score_ctx: ScoreCtx) -> None:
    """Not the mean of sentence values: the statistics are pooled first."""
    bleu = Bleu(max_order=2)
    scores = [
        _ok(score_ctx, "a b", "a b", max_order=2),
        _ok(score_ctx, "c d e", "c x e", max_order=2),
    ]
    pooled = BleuStatistics(matches=(4, 1), totals=(5, 3), hyp_len=5, ref_len=5)
    expected = bleu_from_statistics(pooled, smooth="exp", effective_order=False).value
    assert bleu.corpus_score(scores) == pytest.approx(expected)
    assert expected == pytest.approx(math.sqrt(4 / 5 * 1 / 3))


def test_corpus_score_has_no_effective_order(score_ctx: ScoreCtx) -> None:
    """A one-word corpus has no 2-grams at all, which makes corpus BLEU 0."""
    scores = [_ok(score_ctx, "hello", "hello")]
    assert scores[0].value == pytest.approx(1.0)
    assert Bleu().corpus_score(scores) == 0.0


def test_corpus_score_of_nothing_is_none() -> None:
    assert Bleu().corpus_score([]) is None


def test_corpus_score_leaves_out_scores_without_matching_statistics(score_ctx: ScoreCtx) -> None:
    mine = _ok(score_ctx, "a b c d", "a b c d")
    others = [
        Score(metric_id="builtin/exact_match", value=1.0),
        _ok(score_ctx, "a b", "a b", max_order=2),
    ]
    assert Bleu().corpus_score([mine, *others]) == pytest.approx(1.0)
    assert Bleu().corpus_score(others[:1]) is None


def test_corpus_score_reads_statistics_after_a_json_round_trip(score_ctx: ScoreCtx) -> None:
    score = _ok(score_ctx, "the cat sat on the mat", "the cat sat on a mat")
    restored = Score.model_validate_json(score.model_dump_json())
    assert Bleu().corpus_score([restored]) == Bleu().corpus_score([score])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_order": 0}, "max_order"),
        ({"max_order": True}, "max_order"),
        ({"tokenize": "intl"}, "13a"),
        ({"smooth": "add-one"}, "add-k"),
    ],
)
def test_invalid_parameters_are_rejected_with_the_valid_choices(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Bleu(**params)


def test_every_parameter_is_in_the_fingerprint() -> None:
    baseline = Bleu().fingerprint()
    variants = [
        {"max_order": 3},
        {"tokenize": "char"},
        {"lowercase": True},
        {"smooth": "floor"},
        {"smooth_value": 0.2},
    ]
    assert all(Bleu(**v).fingerprint() != baseline for v in variants)  # type: ignore[arg-type]
    assert Bleu().fingerprint() == baseline
