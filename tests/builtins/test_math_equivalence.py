"""``builtin/math_equivalence``: math_verify when installed, else a normalised text compare."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest
from themis.core.contexts import ScoreContext
from themis.core.models import Case, ParsedOutput, Score, ScoreError
from themis_builtins import MathEquivalence
from themis_builtins.math_equivalence import normalize_math_text

ScoreCtx = Callable[[ParsedOutput, Case], ScoreContext]

math_verify = pytest.importorskip(
    "math_verify", reason="math_verify is installed by the dev env (themis-builtins[math])"
)


def _score(metric: MathEquivalence, score_ctx: ScoreCtx, value: Any, expected: Any) -> Any:
    parsed = ParsedOutput(value=value)
    case = Case(case_id="case-1", input="q", expected_output=expected)
    return metric.score(parsed, case, score_ctx(parsed, case))


def test_uses_math_verify_when_it_is_installed() -> None:
    assert MathEquivalence().backend == "math_verify"


@pytest.mark.parametrize(
    ("answer", "gold"),
    [(r"\frac{1}{2}", "0.5"), ("x+1", "1+x"), (r"\sqrt{2}", r"\sqrt 2"), ("1,000", "1000")],
)
def test_math_verify_accepts_equivalent_forms(score_ctx: ScoreCtx, answer: str, gold: str) -> None:
    result = _score(MathEquivalence(), score_ctx, answer, gold)
    assert isinstance(result, Score)
    assert result.value == 1.0
    assert result.details == {"candidate_answer": answer, "gold_answer": gold}


def test_math_verify_rejects_different_values(score_ctx: ScoreCtx) -> None:
    result = _score(MathEquivalence(), score_ctx, "2", "3")
    assert isinstance(result, Score) and result.value == 0.0


def test_gold_answer_is_read_from_the_answer_key(score_ctx: ScoreCtx) -> None:
    result = _score(MathEquivalence(), score_ctx, "4", {"answer": "4", "solution": "2+2"})
    assert isinstance(result, Score) and result.value == 1.0
    assert result.details["gold_answer"] == "4"


@pytest.mark.parametrize("use_math_verify", [True, False])
@pytest.mark.parametrize(("answer", "gold"), [("", "4"), ("4", ""), ("4", None), (None, "4")])
def test_either_side_empty_is_zero(
    score_ctx: ScoreCtx, use_math_verify: bool, answer: Any, gold: Any
) -> None:
    result = _score(MathEquivalence(use_math_verify=use_math_verify), score_ctx, answer, gold)
    assert isinstance(result, Score) and result.value == 0.0


def test_verifier_error_gives_a_score_error(
    score_ctx: ScoreCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_verify(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr(math_verify, "verify", broken_verify)
    result = _score(MathEquivalence(), score_ctx, "1", "1")
    assert isinstance(result, ScoreError)
    assert result.metric_id == "builtin/math_equivalence"
    assert result.reason == "verifier_error"
    assert result.details["error_type"] == "RuntimeError"
    assert "sympy exploded" in str(result.details["message"])


def test_constructor_flag_selects_the_text_fallback(score_ctx: ScoreCtx) -> None:
    metric = MathEquivalence(use_math_verify=False)
    result = _score(metric, score_ctx, r"\dfrac{1}{2}", r"\frac{1}{2}")
    assert metric.backend == "normalized_text"
    assert isinstance(result, Score) and result.value == 1.0
    assert result.details["fallback"] == "normalized_text"


def test_text_fallback_does_no_algebra(score_ctx: ScoreCtx) -> None:
    result = _score(MathEquivalence(use_math_verify=False), score_ctx, "x+1", "1+x")
    assert isinstance(result, Score) and result.value == 0.0


def test_backend_is_part_of_the_fingerprint() -> None:
    assert MathEquivalence().fingerprint() != MathEquivalence(use_math_verify=False).fingerprint()


def test_falls_back_to_text_when_math_verify_cannot_be_imported() -> None:
    """In a fresh interpreter where importing math_verify fails, the fallback is used."""
    script = textwrap.dedent(
        """
        import json, sys
        sys.modules["math_verify"] = None  # makes `import math_verify` raise ImportError
        from themis.core.contexts import ScoreContext
        from themis.core.models import Case, ParsedOutput
        from themis_builtins import MathEquivalence
        metric = MathEquivalence()
        parsed = ParsedOutput(value="$1/2$")
        case = Case(case_id="c", input="q", expected_output="1/2")
        ctx = ScoreContext(run_id="r", case=case, parsed_output=parsed)
        score = metric.score(parsed, case, ctx)
        print(json.dumps({"backend": metric.backend, "value": score.value,
                          "details": score.details}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        '{"backend": "normalized_text", "value": 1.0, "details": {"candidate_answer": "$1/2$", '
        '"gold_answer": "1/2", "fallback": "normalized_text"}}'
    )


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (r"$\dfrac{1}{2}$", r"\frac{1}{2}"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\text{ Yes }.", "yes"),
        (r"90^\circ", "90"),
        ("1,000", "1000"),
        ("3.50", "3.5"),
        ("+.5", "0.5"),
        ("2.0", "2"),
        (r"x \, = \! 3", "x=3"),
    ],
)
def test_normalized_text_form(raw: str, normal: str) -> None:
    assert normalize_math_text(raw) == normal


def test_math_verify_works_off_the_main_thread(score_ctx: ScoreCtx) -> None:
    """math_verify's SIGALRM timeout only works on the main thread, so it is skipped elsewhere."""
    results: list[Any] = []
    metric = MathEquivalence()
    worker = threading.Thread(
        target=lambda: results.append(_score(metric, score_ctx, "0.5", "1/2"))
    )
    worker.start()
    worker.join(timeout=60)
    (result,) = results
    assert isinstance(result, Score) and result.value == 1.0


def test_unreadable_answer_scores_zero_rather_than_erroring(score_ctx: ScoreCtx) -> None:
    for answer in (r"\frac{", "I don't know", "}}{{"):
        result = _score(MathEquivalence(), score_ctx, answer, "1/2")
        assert isinstance(result, Score) and result.value == 0.0, answer
