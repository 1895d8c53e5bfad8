"""Canonical JSON and the hashes built on it stay byte-identical to the stdlib formula.

Stage-cache keys, run ids and fingerprints are stored: any shortcut in how the canonical
text is encoded must give the text ``json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=False)`` gives, which is what every earlier version wrote.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field
from themis.core.base import (
    HashableModel,
    HashTemplate,
    canonical_json,
    content_hash,
    hash_with_items,
    to_canonical,
)
from themis.core.models import Case, Dataset, GenerationResult, Message, ParsedOutput


def _reference(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _reference_hash(value: Any) -> str:
    return hashlib.sha256(_reference(to_canonical(value)).encode("utf-8")).hexdigest()


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_json)
def test_canonical_json_is_the_stdlib_encoding(value: Any) -> None:
    assert canonical_json(value) == _reference(value)
    assert content_hash(value) == _reference_hash(value)


@given(st.lists(_json, max_size=3), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_a_non_finite_float_anywhere_is_refused(values: list[Any], bad: float) -> None:
    for value in (bad, [*values, bad], {"k": bad, "other": values}):
        with pytest.raises(ValueError):
            canonical_json(value)


@given(
    case_id=st.text(min_size=1),
    input=_json,
    expected=_json,
    metadata=st.dictionaries(st.text(), st.text(), max_size=3),
)
def test_a_models_hash_is_the_stdlib_hash_of_its_fields(
    case_id: str, input: Any, expected: Any, metadata: dict[str, str]
) -> None:
    case = Case(case_id=case_id, input=input, expected_output=expected, metadata=metadata)
    fields = {
        "case_id": case_id,
        "input": input,
        "expected_output": expected,
        "metadata": metadata,
    }
    assert case.compute_hash() == _reference_hash(fields)
    parsed = ParsedOutput(value=input, format=None, metadata={})
    assert parsed.compute_hash() == _reference_hash(
        {"value": input, "format": None, "metadata": {}}
    )


@given(fixed=st.dictionaries(st.text(), _json, max_size=4), seed=st.integers(), case=st.text())
def test_a_template_key_is_the_stdlib_hash_of_the_whole_dict(
    fixed: dict[str, Any], seed: int, case: str
) -> None:
    fixed = {k: v for k, v in fixed.items() if k not in ("seed", "case", "flag")}
    template = HashTemplate(fixed, ("case", "flag", "seed"))
    for flag in (True, False, None, 1.0, 1):
        whole = {**fixed, "case": case, "seed": seed, "flag": flag}
        assert template.hash(case=case, seed=seed, flag=flag) == _reference_hash(whole)


class _RenamedCase(Case):
    """A case whose canonical form is its own: the dataset's text must still hold it."""

    def canonical_data(self) -> dict[str, Any]:
        return {"id": self.case_id, "in": self.input}


_cases = st.builds(
    Case,
    case_id=st.text(min_size=1),
    input=_json,
    expected_output=_json,
    metadata=st.dictionaries(st.text(), st.text(), max_size=2),
) | st.builds(_RenamedCase, case_id=st.text(min_size=1), input=_json)


@given(
    cases=st.lists(_cases, max_size=6, unique_by=lambda case: case.case_id),
    revision=st.none() | st.text(),
    metadata=st.dictionaries(st.text(), st.text(), max_size=2),
)
def test_a_dataset_hashed_with_its_cases_gives_each_hash_compute_hash_gives(
    cases: list[Case], revision: str | None, metadata: dict[str, str]
) -> None:
    dataset = Dataset(dataset_id="d", cases=cases, revision=revision, metadata=metadata)
    fingerprint, digests = hash_with_items(dataset, "cases")
    assert fingerprint == dataset.compute_hash()
    assert digests == b"".join(bytes.fromhex(case.compute_hash()) for case in cases)


def test_hashes_written_by_earlier_versions_are_the_same() -> None:
    """Computed at f791ab7, before the encoder was built once; a cache entry written then
    must be found under the same key now."""
    case = Case(
        case_id="c7",
        input={"q": "7+7", "t": [1, 2.5, None, True]},
        expected_output=14,
        metadata={"src": "caf\u00e9"},
    )
    assert case.compute_hash() == (
        "a538e719da2a5dcc9d2e1cb1ab41d873b100aa6a99b6600424e805f2461c16fb"
    )
    assert ParsedOutput(value=14, format=None, metadata={}).compute_hash() == (
        "4b7614dd62a75266e1d458fffb0be6c5c2d3715e61ff67b3e15affe8c2b64ce1"
    )
    generated = GenerationResult(candidate_id="c7-candidate-0", final_output="14 \U0001f600")
    assert generated.compute_hash() == (
        "f4a65a862f880a8d265c3dea0904de9c37ab87368288d85a48f9778b657d22f1"
    )
    template = HashTemplate(
        {
            "generator_ref": {"component_id": "x/y", "version": "1", "fingerprint": "f"},
            "prompt_spec": None,
        },
        ("case", "seed", "candidate_index"),
    )
    assert template.hash(case=case.compute_hash(), seed=123456789, candidate_index=0) == (
        "e15ba38834b2f18dadda41c4a286f16b3fc9c1b4faf195953ed1f22f92fa9e41"
    )
    assert content_hash({"b": [1, 1.0, -0.0, 1e16, 2**70], "a": "\u2028\x00"}) == (
        "6502cd16855d68b0a2a2c9e1c95758a579c6e0a9e9c4aa13cfdb1321a9269e37"
    )


class _Empty(HashableModel):
    pass


class _WithExcluded(HashableModel):
    zeta: Any = None
    alpha: Any = None
    hidden: Any = Field(default=None, exclude=True)
    when: Any = None


@given(zeta=_json, alpha=_json, hidden=_json)
def test_a_models_hash_leaves_out_excluded_fields_and_converts_the_rest(
    zeta: Any, alpha: Any, hidden: Any
) -> None:
    moment = datetime.datetime(2026, 11, 21, 15, 0, tzinfo=datetime.UTC)
    model = _WithExcluded(zeta=zeta, alpha=alpha, hidden=hidden, when=moment)
    whole = {"zeta": zeta, "alpha": alpha, "when": moment.isoformat()}
    assert model.compute_hash() == _reference_hash(whole)
    assert _Empty().compute_hash() == _reference_hash({})


@given(
    outputs=st.lists(st.tuples(st.text(), _json), max_size=3),
    usage=st.none() | st.dictionaries(st.text(), st.integers(), max_size=3),
)
def test_a_result_with_nested_models_hashes_as_the_stdlib_does(
    outputs: list[tuple[str, Any]], usage: dict[str, int] | None
) -> None:
    conversation = [Message(role=role, content=content) for role, content in outputs]
    result = GenerationResult(
        candidate_id="c-candidate-0",
        final_output=[content for _, content in outputs],
        conversation=conversation or None,
        token_usage=usage,
    )
    assert result.compute_hash() == _reference_hash(result.canonical_data())


@given(
    fixed=st.dictionaries(st.text(), _json, max_size=3),
    variable=st.dictionaries(st.text(), _json, min_size=1, max_size=5),
)
def test_a_template_hashes_values_given_by_position_in_sorted_order(
    fixed: dict[str, Any], variable: dict[str, Any]
) -> None:
    fixed = {k: v for k, v in fixed.items() if k not in variable}
    template = HashTemplate(fixed, tuple(variable))
    in_order = [variable[name] for name in sorted(variable)]
    expected = _reference_hash({**fixed, **variable})
    assert template.sorted_hash(*in_order) == expected
    assert template.hash(**variable) == expected
    with pytest.raises(TypeError):
        template.sorted_hash(*in_order, None)
