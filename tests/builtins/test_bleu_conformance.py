"""``builtin/bleu`` agrees with sacrebleu 2.x within 1e-9, sentence and corpus, on a fixed corpus.

sacrebleu reports 0-100 and ours is 0-1, so sacrebleu's values are divided by 100.
"""

from __future__ import annotations

from typing import Any

import pytest
from themis.core.contexts import ScoreContext
from themis.core.models import Case, ParsedOutput, Score
from themis_builtins import Bleu
from themis_builtins._tokenizers import TOKENIZERS

sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu is a dev dependency of the repo")
from sacrebleu.metrics import BLEU  # noqa: E402

TOLERANCE = 1e-9

# (hypothesis, references): multi-reference, punctuation, numbers, unicode, entities,
# short and empty hypotheses, and segments where higher orders have no match.
CORPUS: list[tuple[str, list[str]]] = [
    ("The cat sat on the mat.", ["The cat sat on the mat."]),
    ("the cat is on the mat", ["The cat sat on the mat.", "There is a cat on the mat."]),
    (
        "It costs $1,000.50 (roughly), see p. 3-4.",
        ["It costs $1,000.50, roughly; see pages 3-4.", "The price is about 1,000.50 dollars."],
    ),
    ("Hello", ["Hello world, how are you?"]),
    ("", ["Nothing was said."]),
    ("Zürich liegt am Zürichsee — schön!", ["Zürich liegt am Zürichsee, es ist schön!"]),
    ("東京は日本の首都です。", ["東京は日本の首都である。", "日本の首都は東京です。"]),
    ("apples oranges", ["bananas and grapes"]),
    ("a b c d e", ["a x c y e"]),
    ("He said &quot;no&quot; &amp; left.", ['He said "no" & left.']),
    ("dr. smith's e-mail is a.b@c.com", ["Dr. Smith's e-mail is a.b@c.com."]),
    ("the the the the the the the", ["The cat is on the mat.", "There is a cat on the mat."]),
    (
        "It is a guide to action which ensures that the military always obeys the commands "
        "of the party.",
        [
            "It is a guide to action that ensures that the military will forever heed Party "
            "commands.",
            "It is the guiding principle which guarantees the military forces always being "
            "under the command of the Party.",
            "It is the practical guide for the army always to heed the directions of the party.",
        ],
    ),
    ("1990-2000 was a decade .", ["1990 - 2000 was a decade."]),
    ("Yes!", ["Yes!", "Yes."]),
    (
        "one two three four five six",
        ["one two three", "one two three four five six seven eight nine"],
    ),
    ("Ça va? Oui, ça va très bien.", ["Ça va ? Oui , ça va très bien ."]),
    ("trailing spaces   \n", ["trailing spaces"]),
    ("x", ["y"]),
    ("multi\nline-\nbreak text\twith tab", ["multiline break text with tab"]),
    ("3.14 , 2,5 and -7 <tags> [x] {y} ~z~ ^_^ `q` |p| \\ / * + = ? @ #", ["3.14, 2,5 and -7"]),
    ("The quick brown fox", ["The quick brown fox jumps", "A quick brown fox", "Quick fox"]),
]

SMOOTHINGS = ["exp", "floor", "add-k", "none"]


def _ours(bleu: Bleu, hypothesis: str, references: list[str]) -> Score:
    parsed = ParsedOutput(value=hypothesis)
    case = Case(case_id="c", input="", expected_output=references)
    score = bleu.score(parsed, case, ScoreContext(run_id="r", case=case, parsed_output=parsed))
    assert isinstance(score, Score), score
    return score


def _sentence_settings() -> list[Any]:
    settings = [
        pytest.param(tok, smooth, lowercase, 4, id=f"{tok}-{smooth}-{'lc' if lowercase else 'mc'}")
        for tok in TOKENIZERS
        for smooth in SMOOTHINGS
        for lowercase in (False, True)
    ]
    settings += [
        pytest.param(tok, "exp", False, order, id=f"{tok}-exp-order{order}")
        for tok in TOKENIZERS
        for order in (1, 2, 6)
    ]
    return settings


def _sentence_differences(tok: str, smooth: str, lowercase: bool, order: int) -> list[float]:
    ours = Bleu(tokenize=tok, smooth=smooth, lowercase=lowercase, max_order=order)
    theirs = BLEU(
        tokenize=tok,
        smooth_method=smooth,
        lowercase=lowercase,
        max_ngram_order=order,
        effective_order=True,
    )
    differences = []
    for hypothesis, references in CORPUS:
        score = _ours(ours, hypothesis, references)
        reference = theirs.sentence_score(hypothesis, references)
        differences.append(abs(score.value - reference.score / 100))
    return differences


def _corpus_difference(tok: str, lowercase: bool, order: int) -> float:
    ours = Bleu(tokenize=tok, lowercase=lowercase, max_order=order)
    scores = [_ours(ours, hypothesis, references) for hypothesis, references in CORPUS]
    streams = max(len(refs) for _, refs in CORPUS)
    references = [
        [refs[k] if k < len(refs) else None for _, refs in CORPUS] for k in range(streams)
    ]
    theirs = BLEU(tokenize=tok, lowercase=lowercase, max_ngram_order=order)
    expected = theirs.corpus_score([h for h, _ in CORPUS], references).score / 100
    value = ours.corpus_score(scores)
    assert value is not None
    return abs(value - expected)


@pytest.mark.parametrize(("tok", "smooth", "lowercase", "order"), _sentence_settings())
def test_sentence_bleu_matches_sacrebleu(
    tok: str, smooth: str, lowercase: bool, order: int
) -> None:
    differences = _sentence_differences(tok, smooth, lowercase, order)
    worst = max(range(len(CORPUS)), key=lambda i: differences[i])
    assert differences[worst] <= TOLERANCE, f"segment {worst}: {CORPUS[worst]!r}"


@pytest.mark.parametrize("tok", list(TOKENIZERS))
def test_sentence_statistics_match_sacrebleu(tok: str) -> None:
    """matches, totals, lengths, brevity penalty and precisions, per segment."""
    ours = Bleu(tokenize=tok)
    theirs = BLEU(tokenize=tok, effective_order=True)
    for hypothesis, references in CORPUS:
        details = _ours(ours, hypothesis, references).details
        reference = theirs.sentence_score(hypothesis, references)
        assert details["matches"] == reference.counts, hypothesis
        assert details["totals"] == reference.totals, hypothesis
        assert (details["hyp_len"], details["ref_len"]) == (reference.sys_len, reference.ref_len)
        assert details["bp"] == pytest.approx(reference.bp, abs=TOLERANCE)
        assert details["precisions"] == pytest.approx(
            [p / 100 for p in reference.precisions], abs=TOLERANCE
        )


@pytest.mark.parametrize("tok", list(TOKENIZERS))
@pytest.mark.parametrize("lowercase", [False, True])
@pytest.mark.parametrize("order", [4, 2])
def test_corpus_bleu_matches_sacrebleu(tok: str, lowercase: bool, order: int) -> None:
    assert _corpus_difference(tok, lowercase, order) <= TOLERANCE


def test_corpus_bleu_matches_sacrebleu_corpus_bleu_function() -> None:
    """The default Bleu() against ``sacrebleu.corpus_bleu`` with its defaults."""
    scores = [_ours(Bleu(), h, refs) for h, refs in CORPUS]
    streams = max(len(refs) for _, refs in CORPUS)
    references = [[r[k] if k < len(r) else None for _, r in CORPUS] for k in range(streams)]
    expected = sacrebleu.corpus_bleu([h for h, _ in CORPUS], references).score / 100
    value = Bleu().corpus_score(scores)
    assert value is not None and abs(value - expected) <= TOLERANCE


def test_sentence_bleu_matches_sacrebleu_sentence_bleu_function() -> None:
    """The default Bleu() against ``sacrebleu.sentence_bleu`` (effective order on)."""
    for hypothesis, references in CORPUS:
        expected = sacrebleu.sentence_bleu(hypothesis, references).score / 100
        assert abs(_ours(Bleu(), hypothesis, references).value - expected) <= TOLERANCE


@pytest.mark.parametrize("tok", list(TOKENIZERS))
def test_tokenizer_matches_sacrebleu(tok: str) -> None:
    from sacrebleu.metrics.bleu import _get_tokenizer

    theirs = _get_tokenizer(tok)()
    for hypothesis, references in CORPUS:
        for segment in (hypothesis, *references):
            assert TOKENIZERS[tok](segment) == theirs(segment.rstrip()).split(), segment


def test_largest_difference_over_every_setting_is_within_tolerance() -> None:
    """One number for the whole conformance matrix (printed; run with -s to see it)."""
    worst_sentence = max(
        max(_sentence_differences(*param.values))  # type: ignore[arg-type]
        for param in _sentence_settings()
    )
    worst_corpus = max(
        _corpus_difference(tok, lowercase, order)
        for tok in TOKENIZERS
        for lowercase in (False, True)
        for order in (4, 2)
    )
    print(
        f"\nBLEU vs sacrebleu: max |sentence diff| = {worst_sentence:.3e}, "
        f"max |corpus diff| = {worst_corpus:.3e}"
    )
    assert worst_sentence <= TOLERANCE and worst_corpus <= TOLERANCE
