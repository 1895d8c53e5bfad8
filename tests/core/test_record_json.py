"""A record's JSON written from its values (``item_json``) is its event's JSON, byte for byte.

A store compares the text it holds under a seq with a re-appended one, so the text written
without building the event must be the event serializer's own, for any values a record
of a plain class can hold; a class whose serializer could write something else is
written through its event.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, field_serializer
from pydantic_core import to_json
from themis.core._event_log import _shape_of, event_of, item_head, item_json, item_row, utc_text
from themis.core._fold_speed import ExactFields
from themis.core.events import (
    GenerationCompletedEvent,
    ParseCompletedEvent,
    ReductionCompletedEvent,
    RunStartedEvent,
    ScoreCompletedEvent,
)

_RECORDED = (
    GenerationCompletedEvent,
    ReductionCompletedEvent,
    ParseCompletedEvent,
    ScoreCompletedEvent,
)

# Any JSON value, non-finite floats and escapes included (the serializer writes NaN as null).
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)
# occurred_at: time.time()'s float as the pipeline sets it, or an aware datetime.
_when = st.floats(min_value=0, max_value=4e9) | st.datetimes(
    min_value=dt.datetime(1970, 1, 2), timezones=st.just(dt.UTC)
)


def _values(annotation: Any, name: str) -> st.SearchStrategy[Any]:
    if name == "occurred_at":
        return _when
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is Literal:
        return st.sampled_from(arguments)
    if origin in (types.UnionType, typing.Union):
        return st.one_of(*(_values(argument, name) for argument in arguments))
    if origin is list:
        return st.lists(st.text(), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(), _json_values, max_size=4)
    return {
        str: st.text(),
        int: st.integers(min_value=-(2**63), max_value=2**63 - 1),
        bool: st.booleans(),
        type(None): st.none(),
    }[annotation]


@st.composite
def _records(draw: st.DrawFn) -> tuple[tuple[Any, ...], int]:
    cls = draw(st.sampled_from(_RECORDED))
    shape = _shape_of(cls)
    assert shape is not None and shape.encode is not None
    fields = cls.model_fields
    values = [draw(_values(fields[name].annotation, name)) for name in shape.packed]
    fields_set = draw(st.sampled_from([set(fields), ExactFields(fields)]))
    seq = draw(st.integers(min_value=1, max_value=2**40))
    return (cls, fields_set, *values), seq


@settings(max_examples=300, deadline=None)
@given(_records())
def test_a_record_is_written_as_its_event_is(drawn: tuple[tuple[Any, ...], int]) -> None:
    record, seq = drawn
    event = event_of(record, seq)
    assert item_json(record, seq) == event.model_dump_json()
    assert item_head(record) == (event.run_id, event.event_type)
    # What a store writes of it, in one call.
    assert item_row(record, seq) == (event.run_id, event.event_type, event.model_dump_json())


def test_an_event_is_written_by_its_serializer() -> None:
    event = RunStartedEvent(run_id="r", seq=1, mode="fresh")
    assert item_json(event, 1) == event.model_dump_json()
    assert item_head(event) == ("r", "run_started")
    assert item_row(event, 1) == ("r", "run_started", event.model_dump_json())


class _Renamed(ScoreCompletedEvent):
    """A field serializer: only the event's serializer knows the text."""

    @field_serializer("metric_id")
    def _upper(self, value: str) -> str:
        return value.upper()


class _Measured(ScoreCompletedEvent):
    """A float field: the serializer writes an int given to it as a float."""

    weight: float = 0.0


class _Aliased(ScoreCompletedEvent):
    """An alias: a dump by alias names the field otherwise."""

    note: str = Field("", serialization_alias="remark")


@pytest.mark.parametrize("cls", [_Renamed, _Measured, _Aliased])
def test_a_class_the_serializer_could_write_otherwise_goes_through_its_event(
    cls: type[ScoreCompletedEvent],
) -> None:
    shape = _shape_of(cls)
    assert shape is not None and shape.encode is None
    values = {
        "run_id": "r",
        "case_id": "c",
        "metric_id": "builtin/exact_match",
        "score": {"metric_id": "builtin/exact_match", "value": 1.0},
    }
    if cls is _Measured:
        values["weight"] = 2
    if cls is _Aliased:
        values["note"] = "n"
    event = cls.model_construct(**values)
    record = (cls, event.__pydantic_fields_set__, *(event.__dict__[n] for n in shape.packed))
    text = item_json(record, 5)
    assert text == event_of(record, 5).model_dump_json()
    if cls is _Renamed:
        assert '"metric_id":"BUILTIN/EXACT_MATCH"' in text


def _serialized(when: float) -> str:
    text: str = to_json(dt.datetime.fromtimestamp(when, dt.UTC)).decode()
    return text[1:-1]


@given(st.floats(min_value=-1e10, max_value=1e10))
def test_a_float_time_is_written_as_the_serializer_writes_its_datetime(when: float) -> None:
    assert utc_text(when) == _serialized(when)


@pytest.mark.parametrize(
    "when",
    [
        1_763_784_539.0,  # a whole second: no fraction
        1_763_784_539.5,
        1_763_784_539.0000005,  # half a microsecond: rounded to even, as fromtimestamp does
        1_763_784_539.0000015,
        1_763_784_539.9999996,  # rounds up into the next second
        1_763_784_539.9999994,
        946_684_800.0,  # the first second of the short way, and the ones either side
        946_684_799.999999,
        4_102_444_799.999999,
        4_102_444_800.0,
    ],
)
def test_edge_times_are_written_as_the_serializer_writes_them(when: float) -> None:
    # Twice, and after another second: the text kept for the last second is right too.
    assert utc_text(when) == utc_text(when) == _serialized(when)
    assert utc_text(when + 1.25) == _serialized(when + 1.25)
    assert utc_text(when) == _serialized(when)
