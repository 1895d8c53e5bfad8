"""The pipeline's cheap payload-size check never calls a payload small that is not."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from themis.core._case import _WORST_BYTES_PER_CHAR, _units
from themis.core.base import canonical_json

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet=st.sampled_from('\u00e9\U0001f600\x01"\\\n'))
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(), inner, max_size=6),
    max_leaves=30,
)


@settings(max_examples=500)
@given(data=st.dictionaries(st.text(), _json, max_size=8) | _json, limit=st.integers(0, 3000))
def test_the_bound_holds_and_means_the_canonical_json_fits(data: Any, limit: int) -> None:
    units = _units(data, limit)
    if units >= 0:
        size = len(canonical_json(data).encode("utf-8"))
        assert size <= units * _WORST_BYTES_PER_CHAR
        assert size <= limit


def test_the_usual_dumps_are_judged_small_without_encoding() -> None:
    reduced = {
        "candidate_id": "c-candidate-0",
        "source_candidate_ids": ["c-candidate-0", "c-candidate-1"],
        "final_output": 2,
        "metadata": {"selected_candidate_id": "c-candidate-0"},
    }
    assert _units(reduced, 262_144) >= 0
    assert _units({"final_output": "\U0001f600" * 200}, 2_000) == -1
    assert _units({"final_output": ("a", "tuple")}, 262_144) == -1  # not JSON-mode data


_ids = st.text(min_size=1, max_size=40)


@settings(max_examples=500)
@given(
    output=_json,
    candidate_id=_ids,
    others=st.lists(_ids, max_size=4),
    artifacts=st.none() | st.dictionaries(st.text(), _json, max_size=3),
    latency=st.none() | st.floats(allow_nan=False, allow_infinity=False),
)
def test_a_pass_through_reduction_is_bounded_by_its_candidates_payload(
    output: Any, candidate_id: str, others: list[str], artifacts: Any, latency: Any
) -> None:
    """The bound ``_pass_through`` trusts instead of walking the reduction's payload."""
    from themis.core._stage_outputs import pass_through_extra

    generated = {
        "candidate_id": candidate_id,
        "final_output": output,
        "trace": None,
        "conversation": None,
        "artifacts": artifacts,
        "token_usage": None,
        "latency_ms": latency,
    }
    ids = [candidate_id, *others]
    reduced = {
        "candidate_id": candidate_id,
        "source_candidate_ids": ids,
        "final_output": output,
        "metadata": {"selected_candidate_id": candidate_id},
    }
    limit = 10**9
    generated_units = _units(generated, limit)
    if generated_units < 0:
        return  # the bound gave up (not JSON-mode data): the reduction is measured instead
    assert 0 <= _units(reduced, limit) <= generated_units + pass_through_extra(ids, candidate_id)
