"""``text_of``: how every builtin reads text out of a JSON value."""

from __future__ import annotations

from themis_builtins.text import text_of, text_or_empty


def test_text_of_keeps_a_string_as_is() -> None:
    assert text_of("  The answer  ") == "  The answer  "


def test_text_of_takes_the_first_string_among_answer_text_output_content() -> None:
    assert text_of({"content": "c", "output": "o", "text": "t", "answer": "a"}) == "a"
    assert text_of({"content": "c", "output": "o", "text": "t"}) == "t"
    assert text_of({"content": "c", "output": "o"}) == "o"
    assert text_of({"content": "c"}) == "c"


def test_text_of_skips_keys_whose_value_is_not_a_string() -> None:
    assert text_of({"answer": 42, "text": "forty-two"}) == "forty-two"


def test_text_of_gives_canonical_json_for_a_dict_without_text_keys() -> None:
    assert text_of({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_text_of_gives_canonical_json_for_other_values() -> None:
    assert text_of(42) == "42"
    assert text_of([1, "x"]) == '[1,"x"]'
    assert text_of(None) == "null"
    assert text_of("é") == "é"
    assert text_of(["é"]) == '["\\u00e9"]'


def test_text_or_empty_reads_none_as_empty_text() -> None:
    assert text_or_empty(None) == ""
    assert text_or_empty({"answer": "a"}) == "a"
