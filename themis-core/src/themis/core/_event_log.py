"""A run's events as ``InMemoryRunStore`` keeps them: packed, all but the newest batch.

An event object with its ``__dict__`` and empty extras takes about 600 bytes, four per
case; the same values in one tuple take about 190. Events of a frozen class without
private attributes, and with no extra ones set, are packed as ``(class, fields set,
*values in declared order but seq)`` once the next batch arrives, and rebuilt, equal to
what was appended, when they are read. The newest batch stays as it came: the store's folder reads
it right after it is appended.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Collection, Iterable, Sequence
from operator import itemgetter
from typing import Any

from themis.core._construct import SET_DICT, SET_EXTRA, SET_FIELDS_SET, SET_PRIVATE
from themis.core.events import RunEvent

__all__ = ["EventLog"]

_new = object.__new__


class _Shape:
    """How the events of one class are packed: their field names in declared order, but
    ``seq``, which the log keeps beside the records."""

    __slots__ = ("extra", "get", "names", "seq_index", "size", "type_at")

    def __init__(self, names: tuple[str, ...], *, extra: bool) -> None:
        self.names = names
        # Whether the class allows extra fields: its instances then hold a dict of them.
        self.extra = extra
        self.size = len(names)
        self.seq_index = names.index("seq")
        packed = names[: self.seq_index] + names[self.seq_index + 1 :]
        self.get = itemgetter(*packed)
        # The position of event_type in a packed record, after the class and fields set.
        self.type_at = 2 + packed.index("event_type")


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
        shape = _Shape(tuple(fields), extra=config.get("extra") == "allow")
    _SHAPES[cls] = shape
    return shape


def _unpack(record: Any, seq: int) -> RunEvent:
    if type(record) is not tuple:
        event: RunEvent = record
        return event
    cls = record[0]
    shape = _SHAPES[cls]
    assert shape is not None  # only a class with a shape is ever packed
    at = shape.seq_index + 2
    model = _new(cls)
    values = record[2:at] + (seq,) + record[at:]  # noqa: RUF005
    SET_DICT(model, dict(zip(shape.names, values, strict=True)))
    # Shared with the event that was packed: a frozen model's fields set never changes.
    SET_FIELDS_SET(model, record[1])
    SET_EXTRA(model, {} if shape.extra else None)
    SET_PRIVATE(model, None)
    return model  # type: ignore[no-any-return]


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
        seqs = self._seqs
        # seqs are dense from 1 in practice, so the direct index almost always hits.
        if 0 < seq <= len(seqs) and seqs[seq - 1] == seq:
            return _unpack(self._records[seq - 1], seq)
        at = bisect_right(seqs, seq) - 1
        if at >= 0 and seqs[at] == seq:
            return _unpack(self._records[at], seq)
        return None

    def after(
        self, after_seq: int | None, event_types: Collection[str] | None = None
    ) -> list[RunEvent]:
        """The events after ``after_seq`` (all when None), of ``event_types`` when given."""
        records, seqs = self._records, self._seqs
        start = 0 if after_seq is None else bisect_right(seqs, after_seq)
        if event_types is None:
            # The newest batch is read as it came, unpacked (the store's folder reads it,
            # with the last event it folded before, right after it is appended).
            live = max(start, self._live)
            read = [_unpack(records[at], seqs[at]) for at in range(start, live)]
            read += records[live:]
            return read
        pairs: Iterable[tuple[Any, int]] = zip(records[start:], seqs[start:], strict=True)
        if event_types is not None:
            pairs = [(r, s) for r, s in pairs if _event_type(r) in event_types]
        return [_unpack(record, seq) for record, seq in pairs]

    def _pack_live(self) -> None:
        """Pack the records of the newest batch (inlined: it runs for every event)."""
        records = self._records
        shapes = _SHAPES
        for index in range(self._live, len(records)):
            event = records[index]
            cls = type(event)
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
