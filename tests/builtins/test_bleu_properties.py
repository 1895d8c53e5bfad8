"""Property tests: BLEU agrees with sacrebleu on generated text, and its identity is honest."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from themis.core.contexts import ScoreContext
from themis.core.models import Case, ParsedOutput, Score
from themis_builtins import Bleu

sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu is a dev dependency of the repo")
from sacrebleu.metrics import BLEU  # noqa: E402

# A small vocabulary makes n-gram matches likely; the symbols exercise the 13a rules.
WORDS = ["the", "cat", "mat", "on", "sat", "a", "The", "3.5", "1,000", "-", ".", ",", "!", "é", "x"]
sentences = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)
references = st.lists(sentences, min_size=1, max_size=3)


def _score(bleu: Bleu, hypothesis: str, refs: list[str]) -> Score:
    parsed = ParsedOutput(value=hypothesis)
    case = Case(case_id="c", input="", expected_output=refs)
    score = bleu.score(parsed, case, ScoreContext(run_id="r", case=case, parsed_output=parsed))
    assert isinstance(score, Score)
    return score


@settings(max_examples=150, deadline=None)
@given(
    hypothesis=sentences,
    refs=references,
    tok=st.sampled_from(["13a", "none", "char"]),
    smooth=st.sampled_from(["exp", "floor", "add-k", "none"]),
    order=st.integers(min_value=1, max_value=5),
)
def test_sentence_bleu_matches_sacrebleu_on_generated_text(
    hypothesis: str, refs: list[str], tok: str, smooth: str, order: int
) -> None:
    ours = _score(Bleu(tokenize=tok, smooth=smooth, max_order=order), hypothesis, refs).value
    theirs = BLEU(
        tokenize=tok, smooth_method=smooth, max_ngram_order=order, effective_order=True
    ).sentence_score(hypothesis, refs)
    assert abs(ours - theirs.score / 100) <= 1e-9


@settings(max_examples=60, deadline=None)
@given(corpus=st.lists(st.tuples(sentences, sentences), min_size=1, max_size=8))
def test_corpus_bleu_matches_sacrebleu_on_generated_corpora(corpus: list[tuple[str, str]]) -> None:
    bleu = Bleu()
    scores = [_score(bleu, hypothesis, [ref]) for hypothesis, ref in corpus]
    expected = sacrebleu.corpus_bleu([h for h, _ in corpus], [[r for _, r in corpus]]).score
    value = bleu.corpus_score(scores)
    assert value is not None and abs(value - expected / 100) <= 1e-9


@settings(max_examples=100, deadline=None)
@given(hypothesis=sentences, refs=references)
def test_sentence_bleu_is_between_zero_and_one(hypothesis: str, refs: list[str]) -> None:
    assert 0.0 <= _score(Bleu(), hypothesis, refs).value <= 1.0 + 1e-12


BLEU_PARAMS = st.fixed_dictionaries(
    {
        "max_order": st.integers(min_value=1, max_value=6),
        "tokenize": st.sampled_from(["13a", "none", "char"]),
        "lowercase": st.booleans(),
        "smooth": st.sampled_from(["exp", "floor", "add-k", "none"]),
        "smooth_value": st.none() | st.sampled_from([0.01, 0.1, 0.5, 1.0]),
    }
)


@settings(max_examples=200, deadline=None)
@given(first=BLEU_PARAMS, second=BLEU_PARAMS)
def test_bleu_fingerprints_are_equal_exactly_when_params_are(
    first: dict[str, object], second: dict[str, object]
) -> None:
    same = Bleu(**first).fingerprint() == Bleu(**second).fingerprint()  # type: ignore[arg-type]
    assert same == (first == second)
