"""Pure metrics on answers: exact match, token F1 and multiple-choice accuracy."""

from __future__ import annotations

from collections import Counter
from typing import Any

from themis.core.contexts import ScoreContext
from themis.core.models import Case, ParsedOutput, Score, ScoreError

from themis_builtins._component import BuiltinComponent
from themis_builtins.text import text_or_empty

__all__ = ["ChoiceAccuracy", "ExactMatch", "TokenF1"]

_validate_score = Score.__pydantic_validator__.validate_python


class ExactMatch(BuiltinComponent):
    """1.0 when the parsed value equals the expected output as raw JSON, else 0.0."""

    component_id = "builtin/exact_match"
    metric_family = "pure"

    def score(self, parsed: ParsedOutput, case: Case, ctx: ScoreContext) -> Score:
        """``float(parsed.value == case.expected_output)``."""
        # ``Score(metric_id=..., value=...)``, validated by pydantic-core straight: the
        # same model, without ``BaseModel.__init__``'s frame (one score per case).
        score: Score = _validate_score(
            {"metric_id": self.component_id, "value": float(parsed.value == case.expected_output)}
        )
        return score


class TokenF1(BuiltinComponent):
    """Token-level F1 between the lower-cased, whitespace-split answer and reference."""

    component_id = "builtin/f1"
    metric_family = "pure"

    def score(self, parsed: ParsedOutput, case: Case, ctx: ScoreContext) -> Score | ScoreError:
        """F1 over token multisets; both empty gives 1.0, one empty gives 0.0."""
        if case.expected_output is None:
            return no_reference(self.component_id, case)
        predicted = text_or_empty(parsed.value).lower().split()
        reference = text_or_empty(case.expected_output).lower().split()
        if not predicted and not reference:
            return Score(
                metric_id=self.component_id, value=1.0, details={"precision": 1.0, "recall": 1.0}
            )
        overlap = sum((Counter(predicted) & Counter(reference)).values())
        precision = overlap / len(predicted) if predicted else 0.0
        recall = overlap / len(reference) if reference else 0.0
        f1 = 2 * precision * recall / (precision + recall) if overlap else 0.0
        return Score(
            metric_id=self.component_id,
            value=f1,
            details={"precision": precision, "recall": recall},
        )


class ChoiceAccuracy(BuiltinComponent):
    """1.0 when the chosen option equals the expected one, ignoring case and outer spaces."""

    component_id = "builtin/choice_accuracy"
    metric_family = "pure"

    def score(self, parsed: ParsedOutput, case: Case, ctx: ScoreContext) -> Score | ScoreError:
        """Compares with ``expected_output["choice"]`` (a dict) or the expected value itself."""
        expected: Any = case.expected_output
        if isinstance(expected, dict):
            if "choice" not in expected:
                return ScoreError(
                    metric_id=self.component_id,
                    reason="no_reference",
                    details={
                        "message": f"case {case.case_id!r}: expected_output is a dict without "
                        'a "choice" key; give {"choice": "B"} or the letter itself'
                    },
                )
            expected = expected["choice"]
        if expected is None:
            return no_reference(self.component_id, case)
        chosen = text_or_empty(parsed.value).strip().lower()
        gold = text_or_empty(expected).strip().lower()
        return Score(
            metric_id=self.component_id,
            value=float(chosen == gold),
            details={"chosen": chosen, "expected": gold},
        )


def no_reference(metric_id: str, case: Case) -> ScoreError:
    """The error for a case that has nothing to compare against."""
    return ScoreError(
        metric_id=metric_id,
        reason="no_reference",
        details={
            "message": f"case {case.case_id!r} has no expected_output; "
            f"{metric_id} needs one to compare against"
        },
    )
