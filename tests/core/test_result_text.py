"""A result's text with its cases a chunk to a line reads as the same result, a line at a time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from themis.core import _result_text
from themis.core._case_list import CaseList
from themis.core._result_text import lazy_run_result, run_result_from_json
from themis.core.results import RunResult


def _result(n: int) -> RunResult:
    cases: list[dict[str, Any]] = []
    for i in range(n):
        case: dict[str, Any] = {"case_id": f"c{i}", "dataset_id": "d", "case_key": f"{i}:d:c{i}"}
        if i % 3 == 0:
            case["generated_candidates"] = [
                {"candidate_id": f"c{i}-0", "final_output": {"text": "a\nb", "n": i}}
            ]
            case["scores"] = [{"metric_id": "m", "value": i / 7}]
        elif i % 3 == 1:
            case["generation_failures"] = {f"c{i}-0": 'boom "quoted"\n'}
        else:
            case["case_error"] = "internal"
        cases.append(case)
    return RunResult.model_validate(
        {
            "run_id": "r",
            "status": "completed",
            "progress": {"total_cases": n, "completed_cases": n},
            "cases": cases,
        }
    )


def _lines(result: RunResult, sizes: list[int]) -> str:
    """The text as a store lays it out: chunks of ``sizes`` cases, a chunk to a line."""
    whole = result.model_dump_json(exclude_defaults=True)
    # Without cases (left out at their default), and the list opened in their place.
    head = result.model_copy(update={"cases": []}).model_dump_json(exclude_defaults=True)
    opened = head[:-1] + ',"cases":['
    dumped = [case.model_dump_json(exclude_defaults=True) for case in result.cases]
    chunks, at = [], 0
    for size in sizes:
        chunks.append(",".join(dumped[at : at + size]))
        at += size
    text = opened + "\n" + ",\n".join(chunks) + "\n]}"
    assert json.loads(text) == json.loads(whole)
    return text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=6), st.booleans())
def test_a_text_a_chunk_to_a_line_reads_as_the_whole(sizes: list[int], as_bytes: bool) -> None:
    result = _result(sum(sizes))
    text = _lines(result, sizes)
    read = run_result_from_json(text.encode() if as_bytes else text)
    assert read == result
    assert read.model_dump() == result.model_dump()


def test_each_line_is_validated_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    adapter = _result_text._cases()

    class Counting:
        def validate_json(self, text: str | bytes) -> Any:
            cases = adapter.validate_json(text)
            seen.append(len(cases))
            return cases

    monkeypatch.setattr(_result_text, "_cases", Counting)
    result = _result(7)
    assert run_result_from_json(_lines(result, [3, 3, 1])) == result
    assert seen == [3, 3, 1]


@pytest.mark.parametrize(
    "layout", ["whole", "indented"], ids=["no newline", "newlines of another layout"]
)
def test_any_other_text_is_validated_whole(layout: str) -> None:
    result = _result(4)
    if layout == "whole":
        text = result.model_dump_json(exclude_defaults=True)
    else:
        text = result.model_dump_json(indent=2)
    assert run_result_from_json(text) == result


def test_a_bad_case_on_a_line_fails_as_validating_the_whole_would() -> None:
    text = _lines(_result(4), [2, 2]).replace('"case_key":"3:d:c3"', '"case_key":3')
    with pytest.raises(ValidationError):
        RunResult.model_validate_json(text)
    with pytest.raises(ValidationError):
        run_result_from_json(text)


def test_a_lazy_result_reads_its_cases_from_the_text_when_they_are_used() -> None:
    result = _result(9)
    text = _lines(result, [4, 4, 1]).encode()
    reads: list[int] = []

    def read() -> bytes:
        reads.append(1)
        return text

    lazy = lazy_run_result(text.split(b"\n", 1)[0], read)
    assert lazy is not None
    assert type(lazy.cases) is CaseList and len(lazy.cases) == 9
    assert lazy.progress == result.progress and lazy.status == result.status
    assert reads == []  # the head alone so far
    assert lazy == result
    assert reads == [1]
    assert lazy.model_dump_json() == result.model_dump_json()


def test_a_lazy_result_needs_the_line_that_opens_its_cases() -> None:
    text = _result(3).model_dump_json(exclude_defaults=True).encode()
    assert lazy_run_result(text, lambda: text) is None
    assert lazy_run_result(text.split(b'"cases":[')[0], lambda: text) is None


def test_a_lazy_result_whose_text_lacks_a_case_raises_when_it_is_used() -> None:
    result = _result(6)
    text = _lines(result, [3, 3]).encode()
    short = _lines(result.model_copy(update={"cases": result.cases[:5]}), [3, 2]).encode()
    lazy = lazy_run_result(text.split(b"\n", 1)[0], lambda: short)
    assert lazy is not None and len(lazy.cases) == 6
    with pytest.raises(ValueError, match="the cases read back are 5, not the 6"):
        list(lazy.cases)
    assert not lazy.cases.loaded
