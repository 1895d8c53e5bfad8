"""``SqliteRunStore``: a durable run store in one SQLite file (WAL, one writer, batched commits)."""

from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json
from themis.core._event_log import item_head, item_row
from themis.core.errors import StoreConflictError
from themis.core.events import EVENT_TYPES, RunEvent, event_from_dict
from themis.core.logs import get_logger
from themis.core.results import RunResult
from themis.core.snapshot import RunIdentity, RunSnapshot

from themis_store_sqlite._database import _INSERT_CACHE, insert_rows
from themis_store_sqlite._errors import store_error
from themis_store_sqlite._lease import LeaseOwner, check_append_allowed
from themis_store_sqlite._persisted import _TERMINAL_EVENTS, PersistedProjections

if TYPE_CHECKING:
    from themis_store_sqlite._writer_process import WriterProcess

__all__ = ["SqliteRunStore", "sqlite_store"]

log = get_logger(__name__)

_seq_of = attrgetter("seq")

_INSERT_EVENTS = "INSERT OR IGNORE INTO events (run_id, seq, event_type, json) VALUES "
_SELECT_EVENTS = "SELECT event_type, json FROM events WHERE run_id = ? AND seq > ?"
# Stage-cache writes made while a run holds its lease are kept in memory and committed with
# an event batch: a commit per cache entry would cost more than the case itself. Not with
# every batch, though: the cache's keys are hashes, so its index takes each batch's entries
# at random pages, and a commit rewrites every page it touched. Committed with each batch
# (about 500 entries), they dirtied a page apiece, and the commits took 1.6 -> 4.8 ms as the
# index grew (10,000 cases), with a checkpoint of the WAL they filled; gathered into one
# commit per 4,096 entries, an index page takes many entries at a time. Inserted in key
# order (``SqliteDatabase._writing``), a larger flush pays still more: at 100,000 cases,
# flushes of 16,384 entries instead of 4,096 took 0.76 s of inserts instead of 0.91 and
# 0.49 s of their commits instead of 1.26, writing 191 MB of WAL instead of 569, for a
# buffer of about 10 MB at its fullest. A batch commits
# the buffer once it holds ``_CACHE_FLUSH_ROWS`` entries, once its oldest entry has waited
# ``_CACHE_FLUSH_SECONDS``, and when the batch starts or ends a run (run-level events), so
# a crash loses at most that much of the cache (the events, from which a resume works, are
# committed with every batch) and a run at rest has its cache committed. Reads of this
# store see the buffer; other connections see the entries once they are committed, as
# before (API 5.12 makes no promise on when). ``_CACHE_BUFFER_LIMIT`` bounds the buffer
# when no batch comes: ``store_stage_cache`` then commits it on its own.
_CACHE_FLUSH_ROWS = 16_384
_CACHE_FLUSH_SECONDS = 3.0
_CACHE_BUFFER_LIMIT = 2 * _CACHE_FLUSH_ROWS
# Events without a case: a batch holding one commits the buffered cache entries.
_RUN_LEVEL_EVENTS = frozenset({"run_started", "run_completed", "run_failed", "replay_started"})
_RUN_STARTS = frozenset({"run_started", "replay_started"})
_POSIX = os.name == "posix"
# Batches the writer process may hold sent and not committed (``_pipelined_appender``):
# with one, each commit waited for the child's fold of the batch before it.
_IN_FLIGHT = 3
_SELECT_CACHE_MANY = "SELECT key, payload FROM stage_cache WHERE stage = ? AND key IN ({})"
# Under SQLite's smallest limit on a statement's parameters (999 before 3.32).
_KEYS_PER_QUERY = 500


class SqliteRunStore(PersistedProjections):
    """Run store in one SQLite file; ``":memory:"`` keeps everything in this process.

    Its connections, transactions and run leases are ``SqliteDatabase``'s, its projections
    kept at rest ``PersistedProjections``'; here are the eight primitives and the stage cache.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 5.0,
        writer_process: bool = False,
    ) -> None:
        super().__init__(path, busy_timeout_s=busy_timeout_s)
        # A run's writes and folds in a child process (``_writer_process``); not in memory.
        self.writer_process = bool(writer_process) and not self._in_memory
        if self.writer_process and not _POSIX:
            raise store_error(
                self.path,
                "initialize",
                "writer_process=True needs a POSIX system (its pipes are polled with select)",
                "leave writer_process off on this system; the store then writes in process",
            )
        # Started with the store, so that its imports (about 0.35 s) are done by the time a
        # run's batches come; until it is ready they are written here.
        self._writer_child: WriterProcess | None = None
        if self.writer_process:
            # Imported here: a store without it never loads subprocess (about 7 ms).
            from themis_store_sqlite._writer_process import WriterProcess

            self._writer_child = WriterProcess(self.path, busy_timeout_s)
        # Runs whose batches went to the child: their result is read at rest.
        self._handed_over: set[str] = set()
        self._snapshots: dict[str, tuple[str, RunSnapshot]] = {}
        self._unknown_types_logged: set[str] = set()
        # Rows decoded by query_events, for tests that prove a read did not replay the log.
        self.events_decoded = 0

    def __repr__(self) -> str:
        return f"SqliteRunStore({self.path!r})"

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Flush buffered cache writes, release held leases, close the connections. Idempotent."""
        self._stop_writer_child()
        with self._write_lock:
            try:
                if self._writer is not None and (self._leases or self._cache_buffer):
                    with self._writing("close", flush_cache=True) as conn:
                        for run_id in sorted(self._leases):
                            self._delete_lease(conn, run_id)
            finally:
                self._leases.clear()
                self._cache_buffer.clear()
                self._persisted.clear()
                self._folded_on_append.clear()
                with self._read_lock:
                    self._drop_connections()
        super().close()  # after the store's locks: the projection lock comes before the reader's

    # -- snapshots -------------------------------------------------------------------------

    def persist_snapshot(self, snapshot: RunSnapshot) -> None:
        """Store a run's snapshot; the first write wins, a different identity conflicts."""
        run_id = snapshot.run_id
        text = snapshot.model_dump_json()
        created_at = _dt.datetime.now(_dt.UTC).isoformat()
        with self._writing("persist_snapshot") as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO runs (run_id, snapshot, created_at) VALUES (?, ?, ?)",
                (run_id, text, created_at),
            )
            if cursor.rowcount == 1:
                # What load_snapshot would decode from the text just written: a run's store
                # asks for it when it starts folding, and a second copy of every case of
                # the datasets is not worth a decode (65 MB and 0.3 s at 100,000 cases).
                self._snapshots[run_id] = (created_at, snapshot)
                return
            row = conn.execute(
                "SELECT json_extract(snapshot, '$.identity') FROM runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            # Compared with the new snapshot's own identity, not with the run_id it claims.
            if _identity_hash(row[0]) != snapshot.identity.compute_hash():
                raise store_error(
                    self.path,
                    "persist_snapshot",
                    f"run {run_id} is stored with a different identity",
                    "clear the run (existing_run_policy='rerun') or use another store path",
                    cls=StoreConflictError,
                )

    def load_snapshot(self, run_id: str) -> RunSnapshot | None:
        """The stored snapshot of ``run_id``, or None."""
        with self._reading("load_snapshot") as conn:
            row = conn.execute("SELECT created_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                self._snapshots.pop(run_id, None)
                return None
            cached = self._snapshots.get(run_id)
            if cached is not None and cached[0] == row[0]:
                return cached[1]
            text_row = conn.execute(
                "SELECT created_at, snapshot FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        if text_row is None:  # cleared between the two reads
            return None
        # A snapshot holds every case of the run's datasets: with the cyclic collector on,
        # building those objects rescans them over and over (3x the cost at 100,000 cases).
        collecting = gc.isenabled()
        gc.disable()
        try:
            snapshot = RunSnapshot.model_validate_json(text_row[1])
        finally:
            if collecting:
                gc.enable()
        self._snapshots[run_id] = (text_row[0], snapshot)
        return snapshot

    def _has_snapshot(self, run_id: str) -> bool:
        """Whether the run is stored, without decoding its snapshot."""
        with self._reading("load_snapshot") as conn:
            row = conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row is not None

    def list_runs(self) -> list[str]:
        """Every stored run id, oldest first."""
        with self._reading("list_runs") as conn:
            return [row[0] for row in conn.execute("SELECT run_id FROM runs ORDER BY created_at")]

    # -- events ----------------------------------------------------------------------------

    def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None:
        """Append a batch in one transaction; an identical re-append of a seq is a no-op."""
        if events:
            self._append(run_id, events)

    def _items_appender(self) -> Callable[[str, list[Any], int], None] | None:
        """``EventWriter``'s way in: ``_append_items``, unless a subclass changed how events
        are appended or folded (then it must see every event as one)."""
        cls = type(self)
        if (
            cls.append_events is SqliteRunStore.append_events
            and cls._append is SqliteRunStore._append
            and cls._fold_on_append is PersistedProjections._fold_on_append
        ):
            return self._append_items
        return None

    def _append_items(self, run_id: str, items: list[Any], first_seq: int) -> None:
        """``append_events`` of a batch of events and records (``record_maker``), whose seqs
        run from ``first_seq`` on.

        The run's pipeline then makes its commonest events as records, which cost it less
        than events. No event is built for a record here either: its JSON (the same text
        as its event's) is written from its values (``item_row``), and the fold reads the
        records as they are.
        """
        if not items:
            return
        rows: list[tuple[str, int, str, str]] = []
        run_level = False
        for seq, item in enumerate(items, first_seq):
            item_run, event_type, text = item_row(item, seq)
            if item_run != run_id:
                raise ValueError(
                    f"append_events({run_id!r}) got an event of run {item_run!r} "
                    f"(seq {seq}); append each run's events under its own run_id"
                )
            if type(item) is not tuple and item.seq != seq:
                raise ValueError(
                    f"an event of run {run_id} handed in under seq {seq} has seq {item.seq}"
                )
            if event_type in _RUN_LEVEL_EVENTS:
                run_level = True
            rows.append((run_id, seq, event_type, text))
        self._write_rows(run_id, rows, [], run_level)
        if run_id in self._leases:
            seqs = range(first_seq, first_seq + len(items))
            self._fold_on_append(run_id, items, seqs, rows[-1][2])

    # -- the writer process (``_writer_process``) -------------------------------------------

    def _stop_writer_child(self) -> None:
        child, self._writer_child = self._writer_child, None
        if child is not None:
            child.close()

    def _wait_writer_ready(self, timeout: float) -> bool:
        """Whether the writer process is ready, waiting up to ``timeout`` s (for tests and
        benchmarks that want every batch to go to it)."""
        child = self._writer_child
        return child is not None and child.poll_ready(timeout)

    def _pipelined_appender(
        self,
    ) -> tuple[Callable[[str, list[Any], int], int], Callable[[], int | None]] | None:
        """``EventWriter``'s way in when a writer process takes the batches: ``append``
        returns the last seq known to be committed (a batch sent to the child may not be
        yet) and ``barrier`` waits for every batch sent. Either raises
        ``UncommittedBatches`` naming the first seq to write again."""
        if not self.writer_process or self._items_appender() is None:
            return None
        return self._append_pipelined, self._append_barrier

    def _append_pipelined(self, run_id: str, items: list[Any], first_seq: int) -> int:
        child = self._writer_child
        types = [item_head(item)[1] for item in items]
        if (
            run_id not in self._leases
            or child is None
            or child.failed
            or not (child.outstanding or child.poll_ready())
            # A run plans from this store's folder with its start folded in (the runtime's
            # ``_stored_state``): handed over at its start, the run would have that folder
            # built again here from the file, and then kept up to date here to the end.
            or (run_id not in self._handed_over and not _RUN_STARTS.isdisjoint(types))
        ):
            self._append_items(run_id, items, first_seq)
            return first_seq + len(items) - 1
        if run_id not in self._handed_over:
            # From now on the child folds the run: a folder here would only go stale.
            self._forget_folder(run_id)
            self._handed_over.add(run_id)
        if self._key_filter is None and self._key_filter_wanted:
            with self._writing("append_events"):
                pass  # a transaction here seeds the key filter (``_check_key_filter``)
        last_type = types[-1]
        run_level = not _RUN_LEVEL_EVENTS.isdisjoint(types)
        cache_rows: list[tuple[str, str, str]] = []
        if run_level or self._cache_flush_due():
            with self._write_lock:
                cache_rows = [
                    (stage, key, text) for (stage, key), text in sorted(self._cache_buffer.items())
                ]
                # Out of the buffer now: a failure hands the batch back, and the cache is
                # only an optimisation (a lookup of these keys reads the file meanwhile).
                for stage, key, _ in cache_rows:
                    del self._cache_buffer[(stage, key)]
        terminal = last_type in _TERMINAL_EVENTS
        child.send(run_id, self._owner, items, first_seq, cache_rows, terminal)
        # A batch that ends the run waits for all (its result is read next); others leave
        # up to ``_IN_FLIGHT`` - 1 batches to commit while the loop makes more.
        child.collect(0 if terminal or run_level else _IN_FLIGHT - 1)
        self._after_child_commit(cache_rows)
        if child.outstanding:
            return child.outstanding[0][0] - 1
        return first_seq + len(items) - 1

    def _append_barrier(self) -> int | None:
        child = self._writer_child
        if child is None or not child.outstanding:
            return None
        committed = child.collect(0)
        self._after_child_commit([])
        return committed

    def _after_child_commit(self, cache_rows: list[tuple[str, str, str]]) -> None:
        with self._write_lock:
            key_filter = self._key_filter
            if key_filter is not None:
                for stage, key, _ in cache_rows:
                    key_filter.add(stage, key)
                if self._writer is not None:
                    # The child's commits move this connection's data version; they are
                    # this store's own (a third connection committing in between is missed
                    # by the lookups, as ``_check_key_filter`` allows).
                    key_filter.version = self._writer.execute("PRAGMA data_version").fetchone()[0]
        if self._checkpointer is not None:
            self._checkpointer.nudge()

    def _result_written_elsewhere(self, run_id: str) -> RunResult | None:
        """The result of a run the writer process folded, read at rest; None otherwise."""
        if run_id not in self._handed_over or run_id in self._folded_on_append:
            return None
        # A folder made here after the handover (a read of the run's projections meanwhile)
        # stopped where that read was: the texts the child kept at rest are the result.
        self._forget_folder(run_id)
        return self._stored_run_result(run_id)

    def _child_write(
        self,
        run_id: str,
        owner: LeaseOwner,
        items: list[Any],
        first_seq: int,
        cache_rows: list[tuple[str, str, str]],
    ) -> None:
        """In the writer process: the batch's rows and ``cache_rows`` in one transaction,
        under the parent's lease."""
        rows: list[tuple[str, int, str, str]] = []
        for seq, item in enumerate(items, first_seq):
            item_run, event_type, text = item_row(item, seq)
            if item_run != run_id:
                raise ValueError(
                    f"append_events({run_id!r}) got an event of run {item_run!r} (seq {seq})"
                )
            rows.append((run_id, seq, event_type, text))
        with self._writing("append_events") as conn:
            check_append_allowed(conn, self.path, run_id, owner, True)
            before = conn.total_changes
            insert_rows(conn, _INSERT_EVENTS, rows)
            if conn.total_changes - before != len(rows):
                self._check_duplicates(conn, run_id, rows)
            if cache_rows:
                insert_rows(conn, _INSERT_CACHE, cache_rows)

    def _child_fold(self, run_id: str, items: list[Any], seqs: Sequence[int]) -> None:
        """In the writer process: fold a committed slice of a batch (and, once the run is at
        rest, write its texts at rest)."""
        self._fold_on_append(run_id, items, seqs, item_head(items[-1])[1])

    def _forget_folder(self, run_id: str) -> None:
        """Drop the run's folder: the parent's when the child takes the run over, the
        child's after a fold failed (a later fold or read builds it again from the file)."""
        with self._projections().lock:
            self._projections().folders.pop(run_id, None)
        self._folded_on_append.discard(run_id)

    def _append(self, run_id: str, events: Sequence[RunEvent]) -> None:
        rows: list[tuple[str, int, str, str]] = []
        unnumbered: list[RunEvent] = []
        run_level = False
        for event in events:
            if event.event_type in _RUN_LEVEL_EVENTS:
                run_level = True
            if event.run_id != run_id:
                raise ValueError(
                    f"append_events({run_id!r}) got an event of run {event.run_id!r} "
                    f"(seq {event.seq}); append each run's events under its own run_id"
                )
            if event.seq is None:
                unnumbered.append(event)
            elif event.seq < 1:
                raise ValueError(f"event seq must be >= 1, got {event.seq} in run {run_id}")
            else:
                # Encoded once, here; the JSON is both what is stored and what a retry is
                # compared against.
                rows.append((run_id, event.seq, event.event_type, _event_json(event)))
        numbered = self._write_rows(run_id, rows, unnumbered, run_level)
        if run_id in self._leases:
            appended = [e for e in events if e.seq is not None] + numbered
            ordered = sorted(appended, key=_seq_of)
            seqs = [event.seq or 0 for event in ordered]
            self._fold_on_append(run_id, ordered, seqs, ordered[-1].event_type)

    def _write_rows(
        self,
        run_id: str,
        rows: list[tuple[str, int, str, str]],
        unnumbered: list[RunEvent],
        run_level: bool,
    ) -> list[RunEvent]:
        """Insert ``rows`` and ``unnumbered`` (numbered after the stored maximum) in one
        transaction; return the events numbered."""
        numbered: list[RunEvent] = []
        flush = run_level or self._cache_flush_due()
        with self._writing("append_events", flush_cache=flush) as conn:
            check_append_allowed(conn, self.path, run_id, self._owner, run_id in self._leases)
            if unnumbered:
                numbered = self._number(conn, run_id, rows, unnumbered)
                rows += [_row(run_id, event) for event in numbered]
            before = conn.total_changes
            insert_rows(conn, _INSERT_EVENTS, rows)
            if conn.total_changes - before != len(rows):
                self._check_duplicates(conn, run_id, rows)
        # Folded by the caller after the writer's lock is released: cache writes and other
        # runs' appends do not wait for the fold, and a fold that finds a gap leaves it to
        # the next read.
        return numbered

    def _number(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        rows: list[tuple[str, int, str, str]],
        events: list[RunEvent],
    ) -> list[RunEvent]:
        """Give events without a seq the next ones after the stored and batched maximum."""
        stored = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        seq = max([int(stored), *(row[1] for row in rows)])
        numbered = []
        for event in events:
            seq += 1
            numbered.append(event.model_copy(update={"seq": seq}))
        return numbered

    def _check_duplicates(
        self, conn: sqlite3.Connection, run_id: str, rows: list[tuple[str, int, str, str]]
    ) -> None:
        """Some rows were ignored: each must equal what is stored under its seq."""
        for _, seq, event_type, text in rows:
            stored = conn.execute(
                "SELECT event_type, json FROM events WHERE run_id = ? AND seq = ?", (run_id, seq)
            ).fetchone()
            if stored is not None and stored[1] != text:
                raise store_error(
                    self.path,
                    "append_events",
                    f"run {run_id} already has a different event under seq {seq} "
                    f"(stored {stored[0]}, appended {event_type}); nothing of this batch "
                    "was written",
                    "let one writer number a run's events, continuing from the stored maximum",
                    cls=StoreConflictError,
                )

    def query_events(
        self,
        run_id: str,
        *,
        after_seq: int | None = None,
        event_types: Collection[str] | None = None,
    ) -> list[RunEvent]:
        """The run's events after ``after_seq``, in seq order; unknown event types are skipped."""
        sql = _SELECT_EVENTS
        params: list[Any] = [run_id, after_seq if after_seq is not None else 0]
        if event_types is not None:
            wanted = sorted(set(event_types))
            if not wanted:
                return []
            sql += f" AND event_type IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += " ORDER BY seq"
        events: list[RunEvent] = []
        with self._reading("query_events") as conn:
            # Rows are decoded while the cursor streams, so the raw JSON of a large run is
            # never held in memory next to its decoded events.
            for event_type, text in conn.execute(sql, params):
                if event_type not in EVENT_TYPES:
                    self._log_unknown(run_id, event_type)
                    continue
                events.append(event_from_dict(json.loads(text)))
        self.events_decoded += len(events)
        return events

    def _log_unknown(self, run_id: str, event_type: str) -> None:
        if event_type not in self._unknown_types_logged:
            self._unknown_types_logged.add(event_type)
            log.warning(
                "store.unknown_event_type_skipped",
                path=self.path,
                run_id=run_id,
                event_type=event_type,
            )

    def clear_run(self, run_id: str) -> None:
        """Remove the run's snapshot, events and projection state; blobs and cache stay."""
        with self._writing("clear_run") as conn:
            for table in ("runs", "events", "projections"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        self._snapshots.pop(run_id, None)
        self._persisted = {k: v for k, v in self._persisted.items() if k[0] != run_id}
        self._folded_on_append.discard(run_id)
        self._forget_projections(run_id)

    def _last_seq(self, run_id: str) -> int:
        with self._reading("persist_event") as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()
        return int(row[0])

    # -- blobs -----------------------------------------------------------------------------

    def store_blob(self, blob: bytes, media_type: str) -> str:
        """Store bytes under their content address ``sha256:<hex>``. Idempotent."""
        ref = "sha256:" + hashlib.sha256(blob).hexdigest()
        with self._writing("store_blob") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO blobs (ref, media_type, data) VALUES (?, ?, ?)",
                (ref, media_type, sqlite3.Binary(blob)),
            )
        return ref

    def load_blob(self, ref: str) -> tuple[str, bytes] | None:
        """``(media_type, bytes)`` of a stored blob, or None."""
        with self._reading("load_blob") as conn:
            row = conn.execute(
                "SELECT media_type, data FROM blobs WHERE ref = ?", (ref,)
            ).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    # -- stage cache (§5.12) ---------------------------------------------------------------

    def load_stage_cache(self, stage: str, key: str) -> Any:
        """The cached payload for ``(stage, key)``, shared by every run in this file, or None."""
        # A dict lookup is atomic; taking the writer's lock would queue cache reads behind a
        # batch being committed and folded.
        buffered = self._cache_buffer.get((stage, key))
        if buffered is not None:
            return json.loads(buffered)
        with self._reading("load_stage_cache") as conn:
            row = conn.execute(
                "SELECT payload FROM stage_cache WHERE stage = ? AND key = ?", (stage, key)
            ).fetchone()
        if row is None:
            self._missed()
            return None
        return json.loads(row[0])

    def _stage_cache_absent(self, stage: str, key: str) -> bool:
        """True when ``(stage, key)`` is certainly not cached; False when it may be.

        A run's lookups ask this first, on the event loop, and skip the database read of a
        certain miss: on a fresh file every lookup misses, and its read cost more than the
        rest of the lookup. Answered from the writes buffered here and the key filter of the
        rows committed as of this store's last write transaction (see ``_check_key_filter``),
        and only while this store runs a run, whose commits keep that filter fresh. The
        filter is asked for by a run's read that finds a key missing.
        """
        key_filter = self._key_filter
        if key_filter is None or not self._leases or (stage, key) in self._cache_buffer:
            return False
        return not key_filter.may_contain(stage, key)

    def _load_stage_cache_many(self, items: Sequence[tuple[str, str]]) -> list[Any]:
        """``load_stage_cache`` of each ``(stage, key)`` in order, with one query per stage."""
        if type(self).load_stage_cache is not SqliteRunStore.load_stage_cache:
            return super()._load_stage_cache_many(items)  # a subclass reads its own way
        with self._reading("load_stage_cache") as conn:
            return self._read_stage_cache(conn, items)

    def _load_stage_cache_many_nowait(self, items: Sequence[tuple[str, str]]) -> list[Any] | None:
        """``_load_stage_cache_many`` on the calling thread, or None when that would wait.

        The run's cache reads call this on the event loop: a worker-thread trip per batch of
        lookups cost more than the reads, and the stalls it left shrank the writer's batches.
        A read never waits for the writer (WAL), so only the reader's lock, held by another
        read, or a reader not opened yet (opening checks the schema) make it answer None,
        and the caller then reads in a worker thread.
        """
        if (
            type(self)._load_stage_cache_many is not SqliteRunStore._load_stage_cache_many
            or type(self).load_stage_cache is not SqliteRunStore.load_stage_cache
        ):
            return None  # a subclass reads its own way, maybe blocking
        if not self._read_lock.acquire(blocking=False):
            return None
        try:
            conn = self._writer if self._in_memory else self._reader
            if conn is None:
                return None
            try:
                return self._read_stage_cache(conn, items)
            except sqlite3.Error as exc:
                raise self._translate(exc, "load_stage_cache") from exc
        finally:
            self._read_lock.release()

    def _read_stage_cache(
        self, conn: sqlite3.Connection, items: Sequence[tuple[str, str]]
    ) -> list[Any]:
        texts: dict[tuple[str, str], str] = {}
        wanted: dict[str, list[str]] = {}
        for item in items:
            buffered = self._cache_buffer.get(item)
            if buffered is not None:
                texts[item] = buffered
            else:
                wanted.setdefault(item[0], []).append(item[1])
        for stage, keys in wanted.items():
            for start in range(0, len(keys), _KEYS_PER_QUERY):
                chunk = keys[start : start + _KEYS_PER_QUERY]
                sql = _SELECT_CACHE_MANY.format(", ".join("?" * len(chunk)))
                for key, text in conn.execute(sql, (stage, *chunk)):
                    texts.setdefault((stage, key), text)
        if len(texts) < len(items):
            self._missed()
        # Decoded per lookup: two lookups of one key must not share a mutable payload.
        return [None if (text := texts.get(item)) is None else json.loads(text) for item in items]

    def _missed(self) -> None:
        """A run's read found a key missing: ask for the key filter, scanned in the next
        write transaction. A run whose lookups all hit never pays for the scan."""
        if (
            self._key_filter is None
            and not self._key_filter_off
            and self._leases
            and type(self).load_stage_cache is SqliteRunStore.load_stage_cache
            and type(self)._load_stage_cache_many is SqliteRunStore._load_stage_cache_many
        ):
            self._key_filter_wanted = True

    def _cache_flush_due(self) -> bool:
        """Whether an event batch should commit the buffered cache writes (see
        ``_CACHE_FLUSH_ROWS``)."""
        buffer = self._cache_buffer
        return bool(buffer) and (
            len(buffer) >= _CACHE_FLUSH_ROWS
            or time.monotonic() - self._cache_buffered_at >= _CACHE_FLUSH_SECONDS
        )

    def store_stage_cache(self, stage: str, key: str, payload: Any) -> None:
        """Cache a payload; the last write wins. Buffered while this store runs a run."""
        text = _cache_json(payload)
        with self._write_lock:
            buffer = self._cache_buffer
            if not buffer:
                self._cache_buffered_at = time.monotonic()
            buffer[(stage, key)] = text
            if self._leases and len(buffer) < _CACHE_BUFFER_LIMIT:
                return
            with self._writing("store_stage_cache", flush_cache=True):
                pass

    def _store_stage_cache_many_nowait(self, entries: Sequence[tuple[str, str, Any]]) -> bool:
        """``store_stage_cache`` of each ``(stage, key, payload)`` on the calling thread, when
        that only buffers them; False, having stored none, when it would touch the database
        or wait.

        The run's writer calls this on the event loop with each batch's cache entries: on
        SQLite the loop and the store's thread take turns, and a thread trip per batch to
        buffer them cost more than the buffering (0.1 s of 2.6 s at 10,000 cases). Only
        while this store runs a run (the buffer is committed with its event batches) and
        while the batch cannot fill the buffer; a payload that cannot be encoded, the
        writer's lock held by another thread, or a subclass that stores its own way make it
        answer False, and the caller then stores them in a worker thread one by one.
        """
        if type(self).store_stage_cache is not SqliteRunStore.store_stage_cache:
            return False  # a subclass stores its own way, maybe blocking
        if not self._leases or len(self._cache_buffer) + len(entries) >= _CACHE_BUFFER_LIMIT:
            return False
        try:
            texts = [(stage, key, _cache_json(payload)) for stage, key, payload in entries]
        except Exception:
            return False  # the one-by-one path reports each entry that fails
        if not self._write_lock.acquire(blocking=False):
            return False
        try:
            # Checked again under the lock: another thread may have released the run or
            # filled the buffer meanwhile.
            buffer = self._cache_buffer
            if not self._leases or len(buffer) + len(texts) >= _CACHE_BUFFER_LIMIT:
                return False
            if not buffer:
                self._cache_buffered_at = time.monotonic()
            for stage, key, text in texts:
                buffer[(stage, key)] = text
            return True
        finally:
            self._write_lock.release()


def _cache_json(payload: Any) -> str:
    """``payload`` as compact JSON; NaN and infinities are refused, as in every stored JSON.

    Encoded in Rust: ``json.dumps`` cost 5x as much, twice per case. Its output names a
    non-finite float only as a bare ``NaN`` or ``Infinity``; when those letters show up
    anywhere (inside a string, say), ``json.dumps`` decides, and raises for a real one.
    The letters are looked for in the decoded text: ``in`` on ``bytes`` costs about 0.5 us
    a search here, on ``str`` a third of that (the cache writes are encoded on the loop).
    """
    text = to_json(payload, inf_nan_mode="constants").decode()
    if "NaN" in text or "Infinity" in text:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return text


def _event_json(event: RunEvent) -> str:
    """``event.model_dump_json()`` without its keyword handling (1.2 of its 6.6 us)."""
    text: str = event.__pydantic_serializer__.to_json(event).decode()
    return text


def _row(run_id: str, event: RunEvent) -> tuple[str, int, str, str]:
    return (run_id, event.seq or 0, event.event_type, _event_json(event))


def _identity_hash(identity_json: str | None) -> str | None:
    if identity_json is None:
        return None
    try:
        return RunIdentity.model_validate_json(identity_json).compute_hash()
    except ValueError:
        return None


def sqlite_store(
    path: str | os.PathLike[str] = "runs/themis.sqlite3",
    *,
    busy_timeout_s: float = 5.0,
    writer_process: bool = False,
) -> SqliteRunStore:
    """A ``SqliteRunStore`` at ``path``, creating the parent directories."""
    text = os.fspath(path)
    if text not in ("", ":memory:"):
        parent = os.path.dirname(os.path.abspath(text))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise store_error(
                text,
                "initialize",
                f"cannot create the directory {parent} ({exc.strerror or exc})",
                "choose a path in a writable location",
            ) from exc
    return SqliteRunStore(text, busy_timeout_s=busy_timeout_s, writer_process=writer_process)
