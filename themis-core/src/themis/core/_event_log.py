"""A run's events as ``InMemoryRunStore`` keeps them, packed, and the records that pack them.

An event object with its ``__dict__`` and empty extras takes about 600 bytes, four per
case; the same values in one tuple take about 190. Events of a frozen class without
private attributes, and with no extra ones set, are packed as a *record*, ``(class,
fields set, *values in declared order but seq)``, once the next batch arrives, and
rebuilt, equal to what was appended, when they are read. The newest batch stays as it
came: the store's folder reads it right after it is appended.

The pipeline makes its commonest events as records in the first place (``record_maker``),
so that no event object is built for them during a run: the writer hands them to the
store with their first seq, the log keeps them as they are, and the store's folder reads
their values by position. Building, packing and freeing an event object cost about 2 us
of the 5 us an event took. A record's ``occurred_at`` may be ``time.time()``'s float,
made into the datetime when the event is rebuilt; everything read through the store's
API is an event.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Sequence
from operator import itemgetter
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic_core import to_json

from themis.core._construct import (
    SET_DICT,
    SET_EXTRA,
    SET_FIELDS_SET,
    SET_PRIVATE,
    field_sources,
    keyword_parameters,
)
from themis.core.events import RunEvent, utc_now

__all__ = [
    "EventLog",
    "event_of",
    "item_head",
    "item_json",
    "item_row",
    "record_index",
    "record_maker",
]

_new = object.__new__


class _Shape:
    """How the events of one class are packed: their field names in declared order, but
    ``seq``, which the log keeps beside the records."""

    __slots__ = (
        "encode",
        "extra",
        "get",
        "names",
        "packed",
        "run_at",
        "seq_index",
        "size",
        "type_at",
        "unpack",
    )

    def __init__(self, cls: type, names: tuple[str, ...], *, extra: bool) -> None:
        self.names = names
        # Whether the class allows extra fields: its instances then hold a dict of them.
        self.extra = extra
        self.size = len(names)
        self.seq_index = names.index("seq")
        packed = names[: self.seq_index] + names[self.seq_index + 1 :]
        self.packed = packed
        self.get = itemgetter(*packed)
        # The position of event_type in a packed record, after the class and fields set.
        self.type_at = 2 + packed.index("event_type")
        self.run_at = 2 + packed.index("run_id") if "run_id" in packed else None
        self.unpack: Callable[[tuple[Any, ...], int], RunEvent] = _unpacker(cls, self)
        self.encode = _encoder(cls, self)


def _event_dict_source(shape: _Shape, *, utc_text: bool = False) -> tuple[str, str]:
    """Source for a generated ``f(record, seq)``: the lines that make a float
    ``occurred_at`` a UTC datetime (``when``; with ``utc_text``, the text the serializer
    writes for that datetime), and the display of the event's field values in declared
    order, ``seq`` included."""
    entries = []
    when = ""
    for name in shape.names:
        if name == "seq":
            entries.append("'seq': seq")
            continue
        at = 2 + shape.packed.index(name)
        if name == "occurred_at":
            convert = "_utc_text(when)" if utc_text else "_from_timestamp(when, _UTC)"
            when = (
                f"    when = record[{at}]\n    if type(when) is float:\n        when = {convert}\n"
            )
            entries.append("'occurred_at': when")
        else:
            entries.append(f"{name!r}: record[{at}]")
    return when, "{" + ", ".join(entries) + "}"


def _unpacker(cls: type, shape: _Shape) -> Callable[[tuple[Any, ...], int], RunEvent]:
    """The event a record of ``cls`` stands for, given its seq: a generated function that
    fills the event's dict in one display (a float ``occurred_at`` made a UTC datetime)."""
    when, fields = _event_dict_source(shape)
    namespace: dict[str, Any] = {
        "_new": _new,
        "_cls": cls,
        "_set_dict": SET_DICT,
        "_set_fields_set": SET_FIELDS_SET,
        "_set_extra": SET_EXTRA,
        "_set_private": SET_PRIVATE,
        "_from_timestamp": _dt.datetime.fromtimestamp,
        "_UTC": _dt.UTC,
    }
    source = (
        "def unpack(record, seq):\n"
        f"{when}"
        "    model = _new(_cls)\n"
        f"    _set_dict(model, {fields})\n"
        # Shared with the record: a frozen model's fields set never changes.
        "    _set_fields_set(model, record[1])\n"
        f"    _set_extra(model, {'{}' if shape.extra else 'None'})\n"
        "    _set_private(model, None)\n"
        "    return model\n"
    )
    # The source holds field names only (identifiers pydantic accepted), never values.
    exec(source, namespace)
    unpack: Callable[[tuple[Any, ...], int], RunEvent] = namespace["unpack"]
    return unpack


# The annotations whose values ``to_json`` writes as the event's own serializer does (a
# record's values are what the pipeline set, never coerced): see ``_encoder``.
_PLAIN_LEAVES: frozenset[Any] = frozenset({str, int, bool, _dt.datetime, type(None)})


def _plain(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is None:
        return annotation in _PLAIN_LEAVES
    arguments = get_args(annotation)
    if origin is Literal:
        return all(type(value) is str for value in arguments)
    if origin in (UnionType, Union):
        return all(_plain(argument) for argument in arguments)
    if origin is list:
        return arguments == (str,)
    # An ``Any`` value is written by inference in the model's serializer too.
    return origin is dict and arguments == (str, Any)


# The whole second ``utc_text`` last wrote, and its text up to the seconds.
_second: tuple[float, str] = (math.nan, "")
# Times from 2000 to 2100 take the short way; any other goes through a datetime.
_FIRST_SECOND = 946_684_800.0
_LAST_SECOND = 4_102_444_800.0


def utc_text(when: float) -> str:
    """The text the events' serializer writes for ``datetime.fromtimestamp(when, UTC)``.

    ``2026-11-22T03:48:59.204280Z``, or without the fraction when it is nought. Each of a
    record's events had its float made a datetime and written by the serializer: 1.8 of
    the 6 us of writing the event. The microseconds are rounded as ``fromtimestamp``
    rounds them (half to even), and the date and time up to the seconds are worked out
    once a second, not once an event.
    """
    global _second
    if not _FIRST_SECOND <= when < _LAST_SECOND:
        text: str = to_json(_dt.datetime.fromtimestamp(when, _dt.UTC)).decode()
        return text[1:-1]
    fraction, whole = math.modf(when)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    second = _second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    if micros:
        return f"{second[1]}.{micros:06d}Z"
    return second[1] + "Z"


def _encoder(cls: type, shape: _Shape) -> Callable[[tuple[Any, ...], int], str] | None:
    """The JSON text of the event a record of ``cls`` stands for, given its seq, without
    building the event: a generated function that puts the values in a dict, in declared
    order, for ``to_json``. None when the model's serializer could write another text
    (a field serializer, an alias, an excluded field, a type it coerces): then the event is
    built and serialized.

    The text is byte for byte ``event.__pydantic_serializer__.to_json(event)``; a store
    compares it with what it holds under the seq, so it must be. Half the cost of
    building and serializing the event (about 4 against 8 us).
    """
    fields = getattr(cls, "__pydantic_fields__", {})
    decorators = getattr(cls, "__pydantic_decorators__", None)
    config = getattr(cls, "model_config", {})
    if (
        decorators is None
        or decorators.field_serializers
        or decorators.model_serializers
        or getattr(cls, "__pydantic_computed_fields__", None)
        or config.get("ser_json_inf_nan", "null") != "null"
        or config.get("ser_json_timedelta", "iso8601") != "iso8601"
        or config.get("serialize_by_alias")
        or any(
            info.exclude or info.serialization_alias or info.alias or not _plain(info.annotation)
            for info in fields.values()
        )
    ):
        return None
    when, fields = _event_dict_source(shape, utc_text=True)
    namespace: dict[str, Any] = {"_to_json": to_json, "_utc_text": utc_text}
    source = (
        "def encode(record, seq):\n"
        f"{when}"
        # The serializer writes a non-finite float as null (``ser_json_inf_nan``).
        f"    return _to_json({fields}, inf_nan_mode='null').decode()\n"
    )
    # The source holds field names only (identifiers pydantic accepted), never values.
    exec(source, namespace)
    encode: Callable[[tuple[Any, ...], int], str] = namespace["encode"]
    return encode


_SHAPES: dict[type, _Shape | None] = {}


def _shape_of(cls: type) -> _Shape | None:
    try:
        return _SHAPES[cls]
    except KeyError:
        pass
    shape = None
    fields = getattr(cls, "__pydantic_fields__", None)
    config = getattr(cls, "model_config", {})
    if (
        fields is not None
        and len(fields) > 2
        and "seq" in fields
        and "event_type" in fields
        and config.get("frozen")
        and not getattr(cls, "__private_attributes__", None)
    ):
        shape = _Shape(cls, tuple(fields), extra=config.get("extra") == "allow")
    _SHAPES[cls] = shape
    return shape


def event_of(item: Any, seq: int) -> RunEvent:
    """The event a log item stands for: a record rebuilt with ``seq``, an event as it is."""
    if type(item) is not tuple:
        event: RunEvent = item
        return event
    shape = _SHAPES[item[0]]
    assert shape is not None  # only a class with a shape is ever packed
    return shape.unpack(item, seq)


def item_json(item: Any, seq: int) -> str:
    """The JSON text of the event a log item stands for (``event_of(item, seq)``), as its
    serializer writes it: a record of a plain class is written without an event."""
    if type(item) is tuple:
        shape = _SHAPES[item[0]]
        assert shape is not None
        if shape.encode is not None:
            return shape.encode(item, seq)
        item = shape.unpack(item, seq)
    text: str = item.__pydantic_serializer__.to_json(item).decode()
    return text


def item_head(item: Any) -> tuple[str, str]:
    """The run id and event type of a log item, without rebuilding a record's event."""
    if type(item) is tuple:
        shape = _SHAPES[item[0]]
        assert shape is not None
        if shape.run_at is not None:
            return item[shape.run_at], item[shape.type_at]
        item = shape.unpack(item, 0)
    return item.run_id, item.event_type


def item_row(item: Any, seq: int) -> tuple[str, str, str]:
    """``(*item_head(item), item_json(item, seq))``: what a store writes of a log item,
    with the record's shape looked up once (a store calls this for every event it writes).
    """
    if type(item) is tuple:
        shape = _SHAPES[item[0]]
        assert shape is not None
        encode = shape.encode
        if encode is not None and shape.run_at is not None:
            return item[shape.run_at], item[shape.type_at], encode(item, seq)
        item = shape.unpack(item, seq)
    text: str = item.__pydantic_serializer__.to_json(item).decode()
    return item.run_id, item.event_type, text


def record_index(cls: type[RunEvent], name: str) -> int:
    """The position of field ``name`` in a record of ``cls``."""
    shape = _shape_of(cls)
    if shape is None or name not in shape.packed:
        raise TypeError(f"{cls.__name__} has no record position for {name!r}")
    return 2 + shape.packed.index(name)


def record_maker(
    cls: type[RunEvent],
    *names: str,
    fields_set: set[str],
    shared: tuple[str, ...] = (),
) -> Callable[..., tuple[Any, ...]]:
    """What ``maker(cls, *names, fields_set=..., shared=...)`` makes, as the record that
    packs it: ``make(ids, name=...)`` returns ``(cls, fields_set, *values)``, with
    ``occurred_at`` the float of ``time.time()`` unless given. ``EventWriter.emit`` takes it
    as an event; ``event_of(record, seq)`` is the event it stands for.
    """
    shape = _shape_of(cls)
    if shape is None or "seq" in names:
        raise TypeError(f"no record maker for {cls.__name__}: its events do not pack")
    namespace: dict[str, Any] = {"_cls": cls, "_fields_set": fields_set}
    computed = {}
    if cls.__pydantic_fields__["occurred_at"].default_factory is utc_now:
        namespace["_time"] = time.time
        computed["occurred_at"] = "_time()"
    sources = dict(field_sources(cls, names, shared=shared, namespace=namespace, computed=computed))
    values = ", ".join(sources[name] for name in shape.packed)
    source = (
        f"def record_{cls.__name__}({keyword_parameters(names, shared)}):\n"
        f"    return (_cls, _fields_set, {values})\n"
    )
    # The source holds field names only (identifiers pydantic accepted), never values.
    exec(source, namespace)
    made: Callable[..., tuple[Any, ...]] = namespace[f"record_{cls.__name__}"]
    return made


def _event_type(record: Any) -> str:
    if type(record) is tuple:
        shape = _SHAPES[record[0]]
        assert shape is not None
        event_type: str = record[shape.type_at]
        return event_type
    return str(record.event_type)


class EventLog:
    """One run's events in ``seq`` order; every event appended has a ``seq``.

    The seqs are kept apart, eight bytes each in an array: in a packed record an int
    object would take 32 (a run's seqs pass 256 at once, past Python's shared small ints).
    """

    __slots__ = ("_live", "_records", "_seqs")

    def __init__(self) -> None:
        self._records: list[Any] = []
        self._seqs = array("q")
        # Records from this index on are the newest batch, not packed yet.
        self._live = 0

    def __len__(self) -> int:
        return len(self._records)

    def last_seq(self) -> int:
        """The highest ``seq`` held (0 when empty)."""
        return self._seqs[-1] if self._seqs else 0

    def extend(self, events: Sequence[RunEvent]) -> None:
        """Add a batch whose seqs follow the last one held, in order."""
        self._pack_live()
        self._live = len(self._records)
        self._records.extend(events)
        self._seqs.fromlist([event.seq or 0 for event in events])

    def extend_items(self, items: Sequence[Any], first_seq: int) -> None:
        """Add a batch of events and records whose seqs run from ``first_seq`` on, after
        the last one held (``EventWriter``'s batches: only events have their seq set)."""
        self._pack_live()
        self._live = len(self._records)
        self._records.extend(items)
        self._seqs.extend(range(first_seq, first_seq + len(items)))

    def item_at(self, seq: int) -> Any:
        """The record or event held under ``seq`` as it is kept, or None."""
        seqs = self._seqs
        if 0 < seq <= len(seqs) and seqs[seq - 1] == seq:
            return self._records[seq - 1]
        at = bisect_right(seqs, seq) - 1
        if at >= 0 and seqs[at] == seq:
            return self._records[at]
        return None

    def items_after(self, seq: int) -> tuple[list[Any], Sequence[int]]:
        """The records and events after ``seq`` as they are kept, and their seqs (for a
        fold that reads records by position: see ``ProjectionFolder.apply_items``)."""
        start = bisect_right(self._seqs, seq)
        return self._records[start:], self._seqs[start:]

    def add_sorted(self, events: Sequence[RunEvent]) -> None:
        """Add events of new seqs anywhere in the log (sorted by ``seq``)."""
        self._pack_live()
        tail = self.last_seq()
        records, seqs = self._records, self._seqs
        records.extend(events)
        seqs.fromlist([event.seq or 0 for event in events])
        if events and (events[0].seq or 0) < tail:
            order = sorted(range(len(records)), key=seqs.__getitem__)
            self._records = [records[i] for i in order]
            self._seqs = array("q", [seqs[i] for i in order])
        self._live = len(self._records)

    def find(self, seq: int) -> RunEvent | None:
        """The event held under ``seq``, or None."""
        # seqs are dense from 1 in practice, so the direct index almost always hits.
        item = self.item_at(seq)
        return None if item is None else event_of(item, seq)

    def after(
        self, after_seq: int | None, event_types: Collection[str] | None = None
    ) -> list[RunEvent]:
        """The events after ``after_seq`` (all when None), of ``event_types`` when given."""
        records, seqs = self._records, self._seqs
        start = 0 if after_seq is None else bisect_right(seqs, after_seq)
        if event_types is None:
            return [event_of(records[at], seqs[at]) for at in range(start, len(records))]
        pairs: Iterable[tuple[Any, int]] = zip(records[start:], seqs[start:], strict=True)
        if event_types is not None:
            pairs = [(r, s) for r, s in pairs if _event_type(r) in event_types]
        return [event_of(record, seq) for record, seq in pairs]

    def _pack_live(self) -> None:
        """Pack the records of the newest batch (inlined: it runs for every event)."""
        records = self._records
        shapes = _SHAPES
        for index in range(self._live, len(records)):
            event = records[index]
            cls = type(event)
            if cls is tuple:
                continue  # a record already
            shape = shapes[cls] if cls in shapes else _shape_of(cls)
            if shape is None:
                continue  # a class that does not pack
            fields = event.__dict__
            if len(fields) != shape.size or event.__pydantic_extra__:
                continue  # keys besides the fields (a cached property), or extra fields
            try:
                values = shape.get(fields)
            except KeyError:
                continue
            # Concatenated: the starred display builds a list first (0.1 us more per event).
            records[index] = (cls, event.__pydantic_fields_set__) + values  # noqa: RUF005
