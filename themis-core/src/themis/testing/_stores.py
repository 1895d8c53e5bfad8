"""``RunStoreContract``: the rules of API §3.7 every ``RunStore`` must keep."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from themis.core.errors import StoreConflictError
from themis.core.events import RunEvent
from themis.core.projections import PROJECTION_NAMES, build_projection
from themis.core.protocols import RunStore
from themis.core.snapshot import RunSnapshot
from themis.core.stores import blob_payload_loader
from themis.testing._run_events import (
    T0,
    RunEvents,
    execution_payload,
    generation_payload,
    json_blob,
    parse_payload,
    reduction_payload,
    sample_run,
    sample_snapshot,
)

__all__ = ["RunStoreContract"]


class RunStoreContract:
    """Subclass in a test module and override the ``store`` fixture to run the suite.

    The fixture returns a fresh store, already ``initialize()``-d. The suite checks the
    RunStore rules of API §3.7: schema idempotence, first-write-wins snapshots, atomic,
    ordered and idempotent appends, ``query_events`` filters, read-your-writes projections
    equal to ``build_projection``, content-addressed blobs, ``clear_run`` and ``resume``.
    """

    @pytest.fixture
    def store(self) -> Iterator[RunStore]:
        """Override: yield a fresh, initialized store under test."""
        raise NotImplementedError(
            "RunStoreContract needs a store: override the `store` fixture in your "
            "subclass to return a fresh, initialized store"
        )

    @pytest.fixture
    def snapshot(self) -> RunSnapshot:
        return sample_snapshot()

    # -- schema and snapshots --------------------------------------------------------

    def test_initialize_is_idempotent(self, store: RunStore, snapshot: RunSnapshot) -> None:
        store.initialize()
        store.persist_snapshot(snapshot)
        store.initialize()
        assert store.load_snapshot(snapshot.run_id) == snapshot

    def test_close_is_idempotent(self, store: RunStore) -> None:
        store.close()
        store.close()

    def test_snapshot_round_trips(self, store: RunStore, snapshot: RunSnapshot) -> None:
        store.persist_snapshot(snapshot)
        loaded = store.load_snapshot(snapshot.run_id)
        assert loaded == snapshot
        assert loaded is not None and loaded.run_id == snapshot.run_id

    def test_unknown_run_has_no_snapshot(self, store: RunStore) -> None:
        assert store.load_snapshot("0" * 64) is None

    def test_first_snapshot_write_wins(self, store: RunStore, snapshot: RunSnapshot) -> None:
        later = snapshot.model_copy(
            update={"provenance": snapshot.provenance.model_copy(update={"platform": "later"})}
        )
        assert later.run_id == snapshot.run_id
        store.persist_snapshot(snapshot)
        store.persist_snapshot(later)
        loaded = store.load_snapshot(snapshot.run_id)
        assert loaded is not None and loaded.provenance.platform == snapshot.provenance.platform

    def test_other_identity_under_same_run_id_conflicts(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        forged = sample_snapshot(label="other")
        # run_id is computed from the identity; forging it is the only way to collide.
        forged.__dict__["run_id"] = snapshot.run_id
        with pytest.raises(StoreConflictError):
            store.persist_snapshot(forged)

    # -- events --------------------------------------------------------------------------

    def test_appended_events_come_back_in_order(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        events = sample_run(snapshot)
        store.append_events(snapshot.run_id, events[:4])
        store.append_events(snapshot.run_id, events[4:])
        assert store.query_events(snapshot.run_id) == events

    def test_append_is_atomic(self, store: RunStore, snapshot: RunSnapshot) -> None:
        store.persist_snapshot(snapshot)
        ev = RunEvents(snapshot)
        first = ev.run_started()
        store.append_events(snapshot.run_id, [first])
        clash = RunEvents(snapshot).run_started(until_stage="score")  # seq 1, different
        batch = [ev.generated("c1"), ev.reduced("c1"), clash]
        with pytest.raises(StoreConflictError):
            store.append_events(snapshot.run_id, batch)
        assert store.query_events(snapshot.run_id) == [first]

    def test_reappending_identical_events_is_a_no_op(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        events = sample_run(snapshot)
        store.append_events(snapshot.run_id, events[:5])
        store.append_events(snapshot.run_id, events[:5])
        rebuilt = [type(e).model_validate(e.to_dict()) for e in events[3:8]]
        store.append_events(snapshot.run_id, rebuilt)
        assert store.query_events(snapshot.run_id) == events[:8]

    def test_different_event_under_same_seq_conflicts(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        store.append_events(snapshot.run_id, [RunEvents(snapshot).run_started()])
        with pytest.raises(StoreConflictError):
            store.append_events(snapshot.run_id, [RunEvents(snapshot).run_failed()])

    def test_query_after_seq_returns_later_events(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        events = sample_run(snapshot)
        store.append_events(snapshot.run_id, events)
        assert store.query_events(snapshot.run_id, after_seq=3) == events[3:]
        assert store.query_events(snapshot.run_id, after_seq=len(events)) == []
        assert store.query_events(snapshot.run_id, after_seq=0) == events

    def test_query_filters_by_event_type(self, store: RunStore, snapshot: RunSnapshot) -> None:
        store.persist_snapshot(snapshot)
        events = sample_run(snapshot)
        store.append_events(snapshot.run_id, events)
        wanted = {"score_completed", "run_completed"}
        expected = [e for e in events if e.event_type in wanted]
        assert store.query_events(snapshot.run_id, event_types=wanted) == expected
        assert store.query_events(snapshot.run_id, event_types=["parse_failed"], after_seq=2) == [
            e for e in events if e.event_type == "parse_failed"
        ]
        assert store.query_events(snapshot.run_id, event_types=[]) == []

    def test_query_of_unknown_run_is_empty(self, store: RunStore) -> None:
        assert store.query_events("0" * 64) == []

    # -- projections -------------------------------------------------------------------

    def test_projections_read_your_writes(self, store: RunStore, snapshot: RunSnapshot) -> None:
        store.persist_snapshot(snapshot)
        events = sample_run(snapshot)
        appended: list[RunEvent] = []
        for start in range(0, len(events), 3):
            batch = events[start : start + 3]
            store.append_events(snapshot.run_id, batch)
            appended += batch
            for name in PROJECTION_NAMES:
                expected = build_projection(name, snapshot, appended)
                assert store.get_projection(snapshot.run_id, name) == expected, name

    def test_projections_resolve_blob_payloads(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        ev = RunEvents(snapshot)
        generation = generation_payload("c1-candidate-0", "x", trace=True)
        execution = execution_payload("test/judge", 0.5)
        events = [
            ev.run_started(),
            ev.generated(
                "c1", blob_ref=store.store_blob(json_blob(generation), "application/json")
            ),
            ev.reduced(
                "c1",
                blob_ref=store.store_blob(json_blob(reduction_payload("c1")), "application/json"),
            ),
            ev.parsed(
                "c1", blob_ref=store.store_blob(json_blob(parse_payload()), "application/json")
            ),
            ev.scored("c1", "test/exact", 1.0),
            ev.evaluated(
                "c1",
                "test/judge",
                blob_ref=store.store_blob(json_blob(execution), "application/json"),
            ),
            ev.scored("c1", "test/judge", 0.5),
        ]
        store.append_events(snapshot.run_id, events)
        loader = blob_payload_loader(store)
        for name in PROJECTION_NAMES:
            expected = build_projection(name, snapshot, events, load_payload=loader)
            assert store.get_projection(snapshot.run_id, name) == expected, name
        trace_view = store.get_projection(snapshot.run_id, "trace_view")
        assert trace_view["generation_traces"][0]["steps"][0]["step_name"] == "reason"
        assert trace_view["evaluation_traces"][0]["execution"]["execution_id"] == "exec:test/judge"

    def test_projection_of_unknown_run_is_none(self, store: RunStore) -> None:
        for name in PROJECTION_NAMES:
            assert store.get_projection("0" * 64, name) is None

    def test_unknown_projection_name_lists_valid_names(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        with pytest.raises(ValueError) as info:
            store.get_projection(snapshot.run_id, "leaderboard")
        for name in PROJECTION_NAMES:
            assert name in str(info.value)
        with pytest.raises(ValueError):
            store.get_projection("0" * 64, "leaderboard")

    # -- blobs ---------------------------------------------------------------------------

    def test_blobs_are_content_addressed_and_idempotent(self, store: RunStore) -> None:
        data = b'{"final_output":"x"}'
        ref = store.store_blob(data, "application/json")
        assert ref == "sha256:" + hashlib.sha256(data).hexdigest()
        assert store.store_blob(data, "application/json") == ref
        assert store.load_blob(ref) == ("application/json", data)

    def test_unknown_blob_is_none(self, store: RunStore) -> None:
        assert store.load_blob("sha256:" + "0" * 64) is None

    # -- clear_run and resume ----------------------------------------------------------

    def test_clear_run_removes_the_run_but_keeps_blobs(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        store.append_events(snapshot.run_id, sample_run(snapshot))
        ref = store.store_blob(b"kept", "text/plain")
        assert store.get_projection(snapshot.run_id, "run_result") is not None
        store.clear_run(snapshot.run_id)
        assert store.load_snapshot(snapshot.run_id) is None
        assert store.query_events(snapshot.run_id) == []
        assert store.resume(snapshot.run_id) is None
        assert store.get_projection(snapshot.run_id, "run_result") is None
        assert store.load_blob(ref) == ("text/plain", b"kept")

    def test_projections_after_clear_run_show_only_the_new_run(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        store.append_events(snapshot.run_id, sample_run(snapshot))
        store.get_projection(snapshot.run_id, "timeline_view")
        store.clear_run(snapshot.run_id)
        store.persist_snapshot(snapshot)
        # A rerun starts again at seq 1, later in time.
        ev = RunEvents(snapshot, start=T0.replace(year=2026))
        fresh = [ev.run_started(until_stage="score"), ev.generated("c1")]
        store.append_events(snapshot.run_id, fresh)
        for name in PROJECTION_NAMES:
            assert store.get_projection(snapshot.run_id, name) == build_projection(
                name, snapshot, fresh
            ), name

    def test_resume_of_unknown_run_is_none(self, store: RunStore) -> None:
        assert store.resume("0" * 64) is None

    def test_resume_returns_snapshot_and_every_event(
        self, store: RunStore, snapshot: RunSnapshot
    ) -> None:
        store.persist_snapshot(snapshot)
        events = sample_run(snapshot)
        store.append_events(snapshot.run_id, events)
        stored = store.resume(snapshot.run_id)
        assert stored is not None
        assert stored.snapshot == snapshot
        assert list(stored.events) == events

    def test_stage_cache_misses_or_returns_the_last_write(self, store: RunStore) -> None:
        assert store.load_stage_cache("parse", "k-missing") is None
        store.store_stage_cache("parse", "k", {"result": 1})
        store.store_stage_cache("parse", "k", {"result": 2})
        assert store.load_stage_cache("parse", "k") in (None, {"result": 2})
