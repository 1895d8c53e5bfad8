"""``builtin/bleu``: real BLEU (Papineni et al., 2002), sentence and corpus, sacrebleu-conformant.

Sentence values use an effective order and smoothing (``exp`` by default); the corpus value
sums every case's sufficient statistics and applies sacrebleu's corpus defaults. Values are
in [0, 1], where sacrebleu reports 0-100.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from themis.core.contexts import ScoreContext
from themis.core.models import Case, ParsedOutput, Score, ScoreError

from themis_builtins._component import BuiltinComponent
from themis_builtins._tokenizers import TOKENIZERS
from themis_builtins.text import text_or_empty

__all__ = ["SMOOTHING_DEFAULTS", "Bleu", "BleuStatistics", "bleu_from_statistics"]

# The default smoothing constant per method (Chen & Cherry, 2014); None means it takes none.
SMOOTHING_DEFAULTS: dict[str, float | None] = {
    "exp": None,
    "floor": 0.1,
    "add-k": 1.0,
    "none": None,
}


@dataclass(frozen=True)
class BleuStatistics:
    """The sufficient statistics of BLEU: clipped matches and totals per order, and lengths."""

    matches: tuple[int, ...]
    totals: tuple[int, ...]
    hyp_len: int
    ref_len: int

    def __add__(self, other: BleuStatistics) -> BleuStatistics:
        return BleuStatistics(
            matches=tuple(a + b for a, b in zip(self.matches, other.matches, strict=True)),
            totals=tuple(a + b for a, b in zip(self.totals, other.totals, strict=True)),
            hyp_len=self.hyp_len + other.hyp_len,
            ref_len=self.ref_len + other.ref_len,
        )


@dataclass(frozen=True)
class BleuValue:
    """A BLEU value with the brevity penalty and the (smoothed) precisions it came from."""

    value: float
    bp: float
    precisions: tuple[float, ...]


def ngram_counts(tokens: Sequence[str], max_order: int) -> Counter[tuple[str, ...]]:
    """How often each n-gram of order 1..max_order occurs in ``tokens``."""
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_order + 1):
        for start in range(len(tokens) - n + 1):
            counts[tuple(tokens[start : start + n])] += 1
    return counts


def closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """The reference length closest to ``hyp_len``; the shorter one wins a tie."""
    return min(ref_lens, key=lambda length: (abs(length - hyp_len), length))


def sentence_statistics(
    hyp_tokens: Sequence[str], refs_tokens: Sequence[Sequence[str]], max_order: int
) -> BleuStatistics:
    """Matches clipped by the largest count of each n-gram in any one reference."""
    max_ref_counts: Counter[tuple[str, ...]] = Counter()
    for ref in refs_tokens:
        max_ref_counts |= ngram_counts(ref, max_order)
    matches = [0] * max_order
    totals = [0] * max_order
    for ngram, count in ngram_counts(hyp_tokens, max_order).items():
        order = len(ngram) - 1
        totals[order] += count
        matches[order] += min(count, max_ref_counts[ngram])
    return BleuStatistics(
        matches=tuple(matches),
        totals=tuple(totals),
        hyp_len=len(hyp_tokens),
        ref_len=closest_ref_len(len(hyp_tokens), [len(ref) for ref in refs_tokens]),
    )


def bleu_from_statistics(
    stats: BleuStatistics,
    *,
    smooth: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = False,
) -> BleuValue:
    """Geometric mean of the smoothed precisions times the brevity penalty, in [0, 1].

    With ``effective_order``, orders the hypothesis has no n-grams of are left out of the
    mean (sentence BLEU); without it they make the value 0 (corpus BLEU).
    """
    if smooth not in SMOOTHING_DEFAULTS:
        raise ValueError(
            f"unknown BLEU smoothing {smooth!r}; use one of {list(SMOOTHING_DEFAULTS)}"
        )
    default = SMOOTHING_DEFAULTS[smooth]
    constant = smooth_value if smooth_value is not None else (default or 0.0)
    order = len(stats.matches)
    c, r = stats.hyp_len, stats.ref_len
    bp = 1.0 if c >= r else (math.exp(1.0 - r / c) if c > 0 else 0.0)
    precisions = [0.0] * order
    if not any(stats.matches):
        return BleuValue(value=0.0, bp=bp, precisions=tuple(precisions))
    used = order
    halvings = 1.0
    for n in range(order):
        matched, total = float(stats.matches[n]), float(stats.totals[n])
        if smooth == "add-k" and n > 0:
            matched += constant
            total += constant
        if total == 0:
            break
        if effective_order:
            used = n + 1
        if matched > 0:
            precisions[n] = matched / total
        elif smooth == "exp":
            # NIST smoothing: each further order with no match gets half the previous credit.
            halvings *= 2.0
            precisions[n] = 1.0 / (halvings * total)
        elif smooth == "floor":
            precisions[n] = constant / total
    kept = precisions[:used]
    if min(kept) <= 0.0:
        return BleuValue(value=0.0, bp=bp, precisions=tuple(precisions))
    value = bp * math.exp(sum(math.log(p) for p in kept) / used)
    return BleuValue(value=value, bp=bp, precisions=tuple(precisions))


class _NoReference(Exception):
    """The expected output holds no usable reference."""


def references_of(expected: Any) -> list[str]:
    """The reference strings of a str, a list of str, or a dict's ``references``/``answer``."""
    if isinstance(expected, Mapping):
        if "references" in expected:
            expected = expected["references"]
        elif "answer" in expected:
            expected = expected["answer"]
        else:
            raise _NoReference('the dict has neither a "references" list nor an "answer" string')
    if isinstance(expected, str):
        return [expected]
    if isinstance(expected, list):
        refs = [ref for ref in expected if ref is not None]
        if not all(isinstance(ref, str) for ref in refs):
            raise _NoReference("every reference in the list must be a string")
        if not refs:
            raise _NoReference("the reference list is empty")
        return refs
    if expected is None:
        raise _NoReference("expected_output is missing")
    raise _NoReference(f"a {type(expected).__name__} is not a reference")


class Bleu(BuiltinComponent):
    """Sentence BLEU per case (``Score.value``) and corpus BLEU over a run (``corpus_score``)."""

    component_id = "builtin/bleu"
    metric_family = "pure"

    def __init__(
        self,
        *,
        max_order: int = 4,
        tokenize: str = "13a",
        lowercase: bool = False,
        smooth: str = "exp",
        smooth_value: float | None = None,
    ) -> None:
        if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
            raise ValueError(f"builtin/bleu: max_order must be a positive int, got {max_order!r}")
        if tokenize not in TOKENIZERS:
            raise ValueError(
                f"builtin/bleu: unknown tokenize={tokenize!r}; use one of {list(TOKENIZERS)}"
            )
        if smooth not in SMOOTHING_DEFAULTS:
            raise ValueError(
                f"builtin/bleu: unknown smooth={smooth!r}; use one of {list(SMOOTHING_DEFAULTS)}"
            )
        self.max_order = max_order
        self.tokenize = tokenize
        self.lowercase = lowercase
        self.smooth = smooth
        self.smooth_value = smooth_value
        self._tokenizer = TOKENIZERS[tokenize]

    def params(self) -> dict[str, Any]:
        return {
            "max_order": self.max_order,
            "tokenize": self.tokenize,
            "lowercase": self.lowercase,
            "smooth": self.smooth,
            "smooth_value": self.smooth_value,
        }

    def tokens(self, segment: str) -> list[str]:
        """The tokens BLEU counts for ``segment``, after optional lower-casing."""
        return self._tokenizer(segment.lower() if self.lowercase else segment)

    def statistics(self, hypothesis: str, references: Sequence[str]) -> BleuStatistics:
        """The sufficient statistics of one hypothesis against its references."""
        return sentence_statistics(
            self.tokens(hypothesis), [self.tokens(ref) for ref in references], self.max_order
        )

    def score(self, parsed: ParsedOutput, case: Case, ctx: ScoreContext) -> Score | ScoreError:
        """Smoothed sentence BLEU with effective order; details hold the statistics."""
        try:
            references = references_of(case.expected_output)
        except _NoReference as exc:
            return ScoreError(
                metric_id=self.component_id,
                reason="no_reference",
                details={
                    "message": f"case {case.case_id!r}: {exc}; give expected_output as a "
                    'string, a list of strings, or {"references": [...]} / {"answer": "..."}'
                },
            )
        stats = self.statistics(text_or_empty(parsed.value), references)
        result = bleu_from_statistics(
            stats, smooth=self.smooth, smooth_value=self.smooth_value, effective_order=True
        )
        return Score(
            metric_id=self.component_id,
            value=result.value,
            details={
                "matches": list(stats.matches),
                "totals": list(stats.totals),
                "hyp_len": stats.hyp_len,
                "ref_len": stats.ref_len,
                "bp": result.bp,
                "precisions": list(result.precisions),
            },
        )

    def corpus_score(self, scores: Sequence[Score]) -> float | None:
        """Corpus BLEU from the summed statistics (smooth ``exp``, no effective order).

        Scores that do not carry this metric's statistics (another ``max_order``, or
        another metric) are left out; with none left the value is ``None``.
        """
        total: BleuStatistics | None = None
        for score in scores:
            stats = self._statistics_of(score)
            if stats is not None:
                total = stats if total is None else total + stats
        if total is None:
            return None
        return bleu_from_statistics(total, smooth="exp", effective_order=False).value

    def _statistics_of(self, score: Score) -> BleuStatistics | None:
        details = score.details
        try:
            matches = tuple(int(m) for m in details["matches"])
            totals = tuple(int(t) for t in details["totals"])
            hyp_len, ref_len = int(details["hyp_len"]), int(details["ref_len"])
        except (KeyError, TypeError, ValueError):
            return None
        if len(matches) != self.max_order or len(totals) != self.max_order:
            return None
        return BleuStatistics(matches=matches, totals=totals, hyp_len=hyp_len, ref_len=ref_len)
