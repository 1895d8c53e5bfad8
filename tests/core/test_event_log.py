"""The in-memory store's packed event log: what is read back equals what was appended."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from themis.core._event_log import EventLog
from themis.core.events import RunEvent
from themis.core.stores import InMemoryRunStore
from themis.testing._run_events import RunEvents, sample_run, sample_snapshot

SNAPSHOT = sample_snapshot(cases=4)
EVENTS: list[RunEvent] = sample_run(SNAPSHOT)


def _dumps(events: list[RunEvent]) -> list[dict[str, object]]:
    return [e.model_dump(mode="json") for e in events]


def _batches(events: list[RunEvent], cuts: list[int]) -> list[list[RunEvent]]:
    bounds = [0, *sorted({c % (len(events) + 1) for c in cuts}), len(events)]
    return [events[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def test_older_batches_are_packed_and_read_back_equal() -> None:
    log = EventLog()
    log.extend(EVENTS[:5])
    log.extend(EVENTS[5:])
    # The first batch was packed when the second came; the second is kept as it came.
    assert all(type(r) is tuple for r in log._records[:5])
    assert all(r is e for r, e in zip(log._records[5:], EVENTS[5:], strict=True))
    read = log.after(None)
    assert read == EVENTS
    assert _dumps(read) == _dumps(EVENTS)
    assert [type(e) for e in read] == [type(e) for e in EVENTS]
    assert [e.model_fields_set for e in read] == [e.model_fields_set for e in EVENTS]
    assert log.last_seq() == EVENTS[-1].seq


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=len(EVENTS)), max_size=6),
    after=st.one_of(st.none(), st.integers(min_value=0, max_value=len(EVENTS) + 1)),
    types=st.one_of(
        st.none(), st.sets(st.sampled_from(sorted({e.event_type for e in EVENTS})), max_size=3)
    ),
)
def test_reads_equal_the_appended_events_for_any_batching(
    cuts: list[int], after: int | None, types: set[str] | None
) -> None:
    log = EventLog()
    for batch in _batches(EVENTS, cuts):
        log.extend(batch)
    expected = [
        e
        for e in EVENTS
        if (after is None or (e.seq or 0) > after) and (types is None or e.event_type in types)
    ]
    assert _dumps(log.after(after, types)) == _dumps(expected)
    for event in EVENTS:
        assert log.find(event.seq or 0) == event
    assert log.find(len(EVENTS) + 1) is None


def test_events_added_out_of_order_are_kept_in_seq_order() -> None:
    log = EventLog()
    log.extend(EVENTS[4:])
    log.add_sorted(EVENTS[:4])
    assert _dumps(log.after(None)) == _dumps(EVENTS)
    assert log.after(3) == EVENTS[3:]


def test_a_store_run_reads_back_its_packed_log_and_refuses_a_different_event() -> None:
    store = InMemoryRunStore()
    store.persist_snapshot(SNAPSHOT)
    run_id = SNAPSHOT.run_id
    store.append_events(run_id, EVENTS[:6])
    store.append_events(run_id, EVENTS[6:])
    assert store.query_events(run_id) == EVENTS
    # An identical re-append of a packed event is a no-op; a different one conflicts.
    store.append_events(run_id, EVENTS[:2])
    other = RunEvents(SNAPSHOT).generated("c9")
    changed = other.model_copy(update={"seq": 1})
    from themis.core.errors import StoreConflictError

    with pytest.raises(StoreConflictError, match="seq=1"):
        store.append_events(run_id, [changed])
    assert store.query_events(run_id) == EVENTS


def test_an_event_with_extra_fields_is_kept_whole() -> None:
    extra = EVENTS[1].model_copy(update={"note": "kept"})
    assert extra.__pydantic_extra__ == {"note": "kept"}
    log = EventLog()
    log.extend([EVENTS[0], extra])
    log.extend(EVENTS[2:])
    assert log._records[1] is extra
    assert log.after(1)[0].model_dump()["note"] == "kept"


def test_packed_records_leave_seq_to_the_log_and_read_back_in_field_order() -> None:
    """A seq is kept in the log's array (8 bytes), not as an int object in each record
    (32), and the event read back has its fields in their declared order, seq included."""
    log = EventLog()
    log.extend(EVENTS[:6])
    log.extend(EVENTS[6:])
    packed = log._records[:6]
    assert all(type(r) is tuple for r in packed)
    for record, event in zip(packed, EVENTS[:6], strict=True):
        assert len(record) == 2 + len(type(event).model_fields) - 1  # every field but seq
    assert list(log._seqs) == [e.seq for e in EVENTS]
    for read, event in zip(log.after(None), EVENTS, strict=True):
        assert list(read.__dict__) == list(event.__dict__)
        assert read.seq == event.seq and repr(read) == repr(event)
    middle = EVENTS[3].seq
    assert middle is not None
    assert log.find(middle) == EVENTS[3]
    assert log.after(middle) == EVENTS[4:]
