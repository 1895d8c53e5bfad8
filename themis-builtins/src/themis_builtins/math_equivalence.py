"""``builtin/math_equivalence``: symbolic answer equivalence, with a text fallback."""

from __future__ import annotations

import importlib
import importlib.util
import re
import threading
from types import ModuleType
from typing import Any

from themis.core.contexts import ScoreContext
from themis.core.models import Case, ParsedOutput, Score, ScoreError

from themis_builtins._component import BuiltinComponent
from themis_builtins.text import text_or_empty

__all__ = ["MathEquivalence", "normalize_math_text"]

MATH_VERIFY = "math_verify"
NORMALIZED_TEXT = "normalized_text"

# math_verify bounds its work with SIGALRM, which only the main thread may use.
_TIMEOUT_S = 5


class MathEquivalence(BuiltinComponent):
    """1.0 when the answer equals the gold answer mathematically (math_verify when installed)."""

    component_id = "builtin/math_equivalence"
    metric_family = "pure"

    def __init__(self, *, use_math_verify: bool = True) -> None:
        self.use_math_verify = use_math_verify
        # Decided once, so the fingerprint says which comparison produced the scores.
        available = importlib.util.find_spec(MATH_VERIFY) is not None
        self.backend = MATH_VERIFY if use_math_verify and available else NORMALIZED_TEXT
        self._verifier: ModuleType | None = None

    def params(self) -> dict[str, Any]:
        return {"use_math_verify": self.use_math_verify, "backend": self.backend}

    def score(self, parsed: ParsedOutput, case: Case, ctx: ScoreContext) -> Score | ScoreError:
        """Compares with ``expected_output["answer"]`` (or the value); either side empty is 0.0."""
        gold: Any = case.expected_output
        if isinstance(gold, dict):
            gold = gold.get("answer")
        candidate_answer = text_or_empty(parsed.value).strip()
        gold_answer = text_or_empty(gold).strip()
        details: dict[str, Any] = {"candidate_answer": candidate_answer, "gold_answer": gold_answer}
        if self.backend == NORMALIZED_TEXT:
            details["fallback"] = NORMALIZED_TEXT
        if not candidate_answer or not gold_answer:
            return Score(metric_id=self.component_id, value=0.0, details=details)
        if self.backend == NORMALIZED_TEXT:
            same = normalize_math_text(candidate_answer) == normalize_math_text(gold_answer)
            return Score(metric_id=self.component_id, value=float(same), details=details)
        try:
            same = self._verify(gold_answer, candidate_answer)
        except Exception as exc:  # the verifier's failure is this case's score error
            return ScoreError(
                metric_id=self.component_id,
                reason="verifier_error",
                details={
                    **details,
                    "error_type": type(exc).__name__,
                    "message": f"math_verify could not compare the answers: {exc}",
                },
            )
        return Score(metric_id=self.component_id, value=float(same), details=details)

    def _verify(self, gold: str, candidate: str) -> bool:
        if self._verifier is None:
            self._verifier = importlib.import_module(MATH_VERIFY)
        verifier = self._verifier
        on_main = threading.current_thread() is threading.main_thread()
        timeout = _TIMEOUT_S if on_main else None
        gold_parsed = verifier.parse(_as_latex(gold), parsing_timeout=timeout, raise_on_error=True)
        candidate_parsed = verifier.parse(
            _as_latex(candidate), parsing_timeout=timeout, raise_on_error=True
        )
        return bool(
            verifier.verify(
                gold_parsed, candidate_parsed, timeout_seconds=timeout, raise_on_error=True
            )
        )


def _as_latex(answer: str) -> str:
    """Math-delimit a bare answer: math_verify only extracts expressions it can anchor."""
    return answer if "$" in answer or "\\boxed" in answer else f"${answer}$"


_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def normalize_math_text(answer: str) -> str:
    """A canonical spelling of an answer: no TeX spacing or wrappers, lower case, tidy numbers."""
    text = answer.strip().strip("$").strip()
    text = _TEXT_WRAPPERS.sub(r"\1", text)
    text = _SPACING.sub("", text)
    text = _DEGREES.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = "".join(text.split()).rstrip(".").lower()
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if _NUMBER.fullmatch(text):
        number = float(text)
        text = str(int(number)) if number.is_integer() else repr(number)
    return text
