"""The builtin parsers: json_identity, text, choice_letter, math_answer and code_text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from themis.core.contexts import ParseContext
from themis.core.models import ParsedOutput, ReducedCandidate
from themis_builtins import ChoiceLetter, CodeText, JsonIdentity, MathAnswer, TextParser

Reduced = Callable[[Any], ReducedCandidate]


def _parse(parser: Any, reduced: Reduced, parse_ctx: ParseContext, output: Any) -> ParsedOutput:
    result = parser.parse(reduced(output), parse_ctx)
    assert isinstance(result, ParsedOutput)
    return result


# json_identity


def test_json_identity_returns_the_value_unchanged(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    value = {"answer": [1, 2, {"x": None}]}
    parsed = _parse(JsonIdentity(), reduced, parse_ctx, value)
    assert parsed.value == value
    assert parsed.format == "json"


# text


def test_text_parser_reads_text_of_the_output(reduced: Reduced, parse_ctx: ParseContext) -> None:
    parsed = _parse(TextParser(), reduced, parse_ctx, {"text": "hello", "score": 1})
    assert parsed.value == "hello"
    assert parsed.format == "text"


def test_text_parser_gives_canonical_json_for_non_text(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    assert _parse(TextParser(), reduced, parse_ctx, [3, 1]).value == "[3,1]"


# choice_letter


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("The answer is (c).", "C"),
        ("A or B? I pick D", "D"),
        ("Answer: J", "J"),
        ("options A-E; final: E.", "E"),
        ("**B**", "B"),
    ],
)
def test_choice_letter_takes_the_last_standalone_letter(
    reduced: Reduced, parse_ctx: ParseContext, text: str, letter: str
) -> None:
    parsed = _parse(ChoiceLetter(), reduced, parse_ctx, text)
    assert parsed.value == letter
    assert parsed.format == "choice_letter"
    assert "invalid" not in parsed.metadata


def test_choice_letter_ignores_letters_inside_words_and_beyond_j(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    assert _parse(ChoiceLetter(), reduced, parse_ctx, "C is KEY, not K or CAB2").value == "C"


def test_choice_letter_without_a_letter_is_empty_and_invalid(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    parsed = _parse(ChoiceLetter(), reduced, parse_ctx, "none of them, sorry: K")
    assert parsed.value == ""
    assert parsed.metadata == {"invalid": True}


def test_choice_letter_reads_a_dict_answer(reduced: Reduced, parse_ctx: ParseContext) -> None:
    assert _parse(ChoiceLetter(), reduced, parse_ctx, {"answer": "(b)"}).value == "B"


# math_answer


def test_math_answer_takes_the_last_boxed(reduced: Reduced, parse_ctx: ParseContext) -> None:
    text = r"First \boxed{1}, then finally \boxed{ 2 }."
    parsed = _parse(MathAnswer(), reduced, parse_ctx, text)
    assert parsed.value == "2"
    assert parsed.format == "math_answer"


def test_math_answer_keeps_nested_braces(reduced: Reduced, parse_ctx: ParseContext) -> None:
    text = r"So \boxed{\frac{1}{\sqrt{2}}} is the answer"
    assert _parse(MathAnswer(), reduced, parse_ctx, text).value == r"\frac{1}{\sqrt{2}}"


def test_math_answer_skips_an_unbalanced_last_boxed(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    text = r"\boxed{7} and a truncated \boxed{\frac{1}{2}"
    assert _parse(MathAnswer(), reduced, parse_ctx, text).value == "7"


def test_math_answer_without_boxed_is_the_stripped_text(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    assert _parse(MathAnswer(), reduced, parse_ctx, "  x = 3 \n").value == "x = 3"


# code_text


def test_code_text_takes_the_last_python_block(reduced: Reduced, parse_ctx: ParseContext) -> None:
    text = "Try:\n```python\nprint(1)\n```\nBetter:\n```py\ndef f():\n    return 2\n```\nDone."
    parsed = _parse(CodeText(), reduced, parse_ctx, text)
    assert parsed.value == "def f():\n    return 2"
    assert parsed.format == "code"


def test_code_text_accepts_cpp_and_untagged_blocks(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    assert _parse(CodeText(), reduced, parse_ctx, "```c++\nint x;\n```").value == "int x;"
    assert _parse(CodeText(), reduced, parse_ctx, "```cpp\nint y;\n```").value == "int y;"
    assert _parse(CodeText(), reduced, parse_ctx, "```\nz = 1\n```").value == "z = 1"


def test_code_text_ignores_blocks_in_other_languages(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    text = "```python\nanswer = 1\n```\nOutput:\n```text\n1\n```\n```bash\npython a.py\n```"
    assert _parse(CodeText(), reduced, parse_ctx, text).value == "answer = 1"


def test_code_text_without_a_block_is_the_stripped_text(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    assert _parse(CodeText(), reduced, parse_ctx, "\n  x = 1\n\n").value == "x = 1"


def test_code_text_reads_solution_then_code_then_answer_from_a_dict(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    output = {"answer": "a = 3", "code": "", "solution": "```python\ns = 1\n```"}
    assert _parse(CodeText(), reduced, parse_ctx, output).value == "s = 1"
    assert _parse(CodeText(), reduced, parse_ctx, {"code": "", "answer": "a = 3"}).value == "a = 3"


def test_code_text_closes_a_fence_written_at_the_end_of_a_line(
    reduced: Reduced, parse_ctx: ParseContext
) -> None:
    assert _parse(CodeText(), reduced, parse_ctx, "```python\nx = 1```").value == "x = 1"
