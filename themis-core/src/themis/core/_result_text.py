"""A ``RunResult`` read back from its JSON text, a chunk of cases at a time.

A store that keeps a run's result at rest may write its cases a chunk to a line (JSON
whitespace between the items of ``cases``): the line that opens the list, one line per
chunk of cases, and ``]}`` on the last line. Validated whole, the text of 100,000 cases
is first parsed into a tree as large again as the result it becomes (peak RSS 700 MB
against 590 MB a chunk at a time, and a fifth more time spent faulting its pages in);
validated a line at a time, only one chunk's tree is ever held. Any other text is
validated whole: the model, and so the result, is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic import TypeAdapter

from themis.core._case_list import CaseList
from themis.core._fold_speed import paused_gc
from themis.core.results import CaseResult, RunResult

__all__ = ["lazy_run_result", "run_result_from_json"]


@cache
def _cases() -> TypeAdapter[list[CaseResult]]:
    return TypeAdapter(list[CaseResult])


def run_result_from_json(text: str | bytes) -> RunResult:
    """``RunResult.model_validate_json(text)``, a line of cases at a time when the text is
    laid out so (see the module); raises ``pydantic.ValidationError`` as that does."""
    # The same steps on either type: the text is not copied to make it one.
    marks: tuple[Any, ...] = (
        (b"\n", b'"cases":[', b"]}", b",", b"[", b"]")
        if isinstance(text, bytes)
        else ("\n", '"cases":[', "]}", ",", "[", "]")
    )
    newline, opens, closes, comma, left, right = marks
    with paused_gc():
        lines: list[Any] = text.split(newline)
        if len(lines) < 3 or not lines[0].endswith(opens) or lines[-1] != closes:
            return RunResult.model_validate_json(text)
        del text
        # The result without its cases: the first line opens their list, closed here.
        head = RunResult.model_validate_json(lines[0] + closes)
        validate = _cases().validate_json
        cases: list[CaseResult] = []
        for at in range(1, len(lines) - 1):
            line, lines[at] = lines[at], None  # each line's text is let go once validated
            # All but the last line of cases end with the comma between two of them.
            cases.extend(validate(left + (line[:-1] if line.endswith(comma) else line) + right))
        return head.model_copy(update={"cases": cases})


def lazy_run_result(first_line: bytes, text: Callable[[], bytes]) -> RunResult | None:
    """The ``RunResult`` of a text laid out a line of cases at a time, from its first line
    (which opens the list of cases), its cases read from ``text()`` when they are first
    used (``CaseList``: ``run_result_from_json`` of the whole text then). None when the line
    does not open the list of cases: the text is then read whole, at once.

    A re-run of a finished run hands back its stored result without validating 100,000
    cases the caller may not read; a text that does not hold the result's every case
    raises when its cases are used (``CaseList.load``).
    """
    opens = b'"cases":['
    if not first_line.endswith(opens) or b"\n" in first_line:
        return None

    def load() -> list[CaseResult]:
        return run_result_from_json(text()).cases

    with paused_gc():  # filed as old, as a result read whole is
        head = RunResult.model_validate_json(first_line + b"]}")
        cases = CaseList.from_loader(load, head.progress.total_cases)
        return head.model_copy(update={"cases": cases})
