"""The projections a SQLite store keeps at rest, and the folder it starts from them."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from typing import Any

from themis.core._result_text import lazy_run_result, run_result_from_json
from themis.core.errors import StoreError
from themis.core.logs import get_logger
from themis.core.projections import ProjectionFolder, check_projection_name
from themis.core.results import RunResult
from themis.core.snapshot import RunSnapshot

from themis_store_sqlite._at_rest import (
    WBITS,
    compressed,
    compressed_fold_state,
    compressed_model,
    stored_text,
)
from themis_store_sqlite._database import SqliteDatabase

__all__ = ["PersistedProjections"]

log = get_logger(__name__)

# A run is at rest after these: its projections will not change until it is resumed.
_TERMINAL_EVENTS = frozenset({"run_completed", "run_failed"})
# The most of a kept ``run_result`` decompressed to find its first line (its fields but
# the cases, written before them).
_FIRST_LINE_MAX = 1 << 16
# The projection kept as the fold's whole state (``themis.core._fold_state``), from which a
# folder continues, rather than as the projection's JSON (schema version 3).
_FOLD_STATE = "execution_state"

# The SQL function through which a projection's text reaches SQLite (see ``_HandOff``).
# The text is compressed (schema version 4, ``_at_rest``): the row holds a BLOB.
_HAND_OFF_FUNCTION = "themis_handed_off_text"
_INSERT_HANDED_OFF = (
    "INSERT OR REPLACE INTO projections (run_id, name, seq, json) "
    f"SELECT ?, ?, ?, {_HAND_OFF_FUNCTION}() "
    "WHERE (SELECT MAX(seq) FROM events WHERE run_id = ?) = ?"
)


class _HandOff:
    """A projection's compressed text on its way into SQLite, held nowhere else.

    Bound as a parameter, a text is copied by SQLite and that copy stays with the cached
    statement until its next use, while SQLite copies it once more into the row it builds:
    three copies of the text at the run's peak of memory (and the bound one long after).
    Returned by an SQL function instead, it is copied once, and ``take`` has let go of it
    by then, so Python's copy is freed before SQLite builds the row; nothing is kept after
    the statement. The row and its bytes are the same.
    """

    __slots__ = ("text",)

    def __init__(self, text: bytes | None = None) -> None:
        self.text = text

    def take(self) -> bytes | None:
        text, self.text = self.text, None
        return text


class PersistedProjections(SqliteDatabase):
    """Projections built on read (or folded on append by the run's writer), kept with the
    seq they cover once the run is at rest, and read back while the log still ends there."""

    # Finished cases the writer's folder lets go of at a time (``compress_finished``): a
    # segment of a few hundred KB of JSON, a few tens of KB compressed.
    finished_chunk = 1024

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 5.0) -> None:
        super().__init__(path, busy_timeout_s=busy_timeout_s)
        # (run_id, name) -> seq of the projection payload this store last saw persisted.
        self._persisted: dict[tuple[str, str], int] = {}
        # Runs this store writes and folds on append; their projections are not persisted
        # here, which would add a full encode of each payload to the end of every run.
        self._folded_on_append: set[str] = set()

    def _fold_on_append(
        self, run_id: str, items: Sequence[Any], seqs: Sequence[int], last_type: str
    ) -> None:
        """The run's writer folds each batch it commits, so no read replays the run's log.

        ``items`` are the batch's events, or the events and records (``_append_items``)
        the writer handed in, with their seqs in order; ``last_type`` is the last one's
        event type."""
        if run_id in self._folded_on_append:
            self._fold_appended_items(run_id, items, seqs)
        # The first batch under the lease: fold what is stored once (nothing for a fresh run,
        # the earlier log for a resumed one); every later batch costs only its own events.
        elif (folder := self.projection_folder(run_id)) is not None:
            self._folded_on_append.add(run_id)
            # The run's finished cases are kept compressed, not as models: the result and
            # the fold state written at rest are made of them (unless the run reads the
            # folder's state as it goes, ``folded_state``).
            with self._projections().lock:
                folder.compress_finished(self.finished_chunk)
        else:
            return
        if last_type in _TERMINAL_EVENTS:
            self._persist_result_at_rest(run_id)

    def _persist_result_at_rest(self, run_id: str) -> None:
        """Persist the run's fold state and its ``run_result`` once it comes to rest.

        Running a finished run again (policy ``auto``) in another process is then one read,
        not a fold of the whole log; resuming, replaying or rejudging it starts from the
        fold state and folds only what was appended after it (schema version 3). The
        result's model is the one the run returns, so the cost is two JSON encodes.

        Fields at their defaults are left out (schema version 2): most of a case's bytes are
        empty containers and nulls, and a smaller text is cheaper to write, to read and to
        validate (76 -> 42 MB at 100,000 cases).

        At the run's peak of memory (about 40 and 50 MB of text at 100,000 cases), so each
        is encoded a few thousand cases at a time into its compressor (schema version 4,
        ``_at_rest``: 3.0 and 3.6 MB stored), one text at a time, and the fold state
        first: the result's model (about 120 MB at 100,000 cases) is built after it. See
        ``_HandOff`` for the write itself."""
        for name in (_FOLD_STATE, "run_result"):
            cache = self._projections()
            text = _HandOff()
            with cache.lock:
                folder = cache.folders.get(run_id)
                last = folder.last_event if folder is not None else None
                if folder is None or last is None or last.event_type not in _TERMINAL_EVENTS:
                    return
                seq = folder.last_seq
                if name == "run_result":
                    text.text = compressed_model(folder.run_result(), "cases", lines=True)
                else:
                    text.text = compressed_fold_state(folder)
            # Written outside the projection lock (the lock order).
            self._persist_projection_text(run_id, name, seq, text)

    # -- projections: built on read, persisted when the run is at rest ----------------------

    def get_projection(self, run_id: str, name: str) -> Any:
        """Projection ``name`` of the run, reflecting every appended event; None if unknown.

        A store that has not folded this run yet answers from the payload persisted for the
        run's current last seq, reading no events; otherwise the base's cached folder
        catches up with the log. A payload read at rest (after ``run_completed`` or
        ``run_failed``) is persisted with its seq for the next reader, except by the store
        that wrote the run: it folded each batch on append and answers from memory, and it
        persisted ``run_result`` when the run came to rest.
        """
        check_projection_name(name)
        if name == "snapshot":
            snapshot = self.load_snapshot(run_id)
            return None if snapshot is None else snapshot.model_dump(mode="json")
        cache = self._projections()
        with cache.lock:
            if run_id not in cache.folders:
                persisted = self._load_persisted(run_id, name)
                if persisted is not None:
                    return persisted
            payload = super().get_projection(run_id, name)
            folder = cache.folders.get(run_id)
            at_rest = None
            text = _HandOff()
            if payload is not None and folder is not None and run_id not in self._folded_on_append:
                last = folder.last_event
                if last is not None and last.event_type in _TERMINAL_EVENTS:
                    at_rest = folder.last_seq
                    if name == _FOLD_STATE and self._persisted.get((run_id, name)) != at_rest:
                        text.text = compressed_fold_state(folder)
        if at_rest is not None:  # written outside the projection lock (the lock order)
            if name != _FOLD_STATE:
                self._persist_projection(run_id, name, at_rest, payload)
            else:
                self._persist_projection_text(run_id, name, at_rest, text)
        return payload

    def _projection_json(self, run_id: str, name: str) -> str | bytes | None:
        """The persisted JSON of projection ``name`` when this store has not folded the run
        and the payload covers the run's last seq (UTF-8 bytes, as decompressed: decoding
        the 40 MB of a 100,000-case result would only copy it); else None."""
        if name in ("snapshot", _FOLD_STATE):
            return None  # never kept / kept as a fold state, not as the projection's JSON
        cache = self._projections()
        with cache.lock:
            if run_id in cache.folders:
                return None
            return self._persisted_text(run_id, name)

    def _load_persisted(self, run_id: str, name: str) -> Any:
        """The persisted payload when it covers the run's last seq, else None."""
        text = self._persisted_text(run_id, name)
        if text is None:
            return None
        if name == _FOLD_STATE:
            # Kept as a fold state (schema version 3), which holds the projection's model.
            return self._fold_state_payload(text)
        if name != "run_result":
            return json.loads(text)
        # Its text may leave out fields at their defaults (schema version 2); the model
        # puts them back.
        return run_result_from_json(text).model_dump(mode="json")

    def _persisted_text(self, run_id: str, name: str) -> str | bytes | None:
        """The persisted JSON (decompressed) when it covers the run's last seq, else None."""
        row = self._persisted_row(run_id, name)
        if row is None:
            return None
        text = self._stored_text(run_id, name, row[1])
        if text is not None:
            self._persisted[(run_id, name)] = row[0]
        return text

    def _persisted_row(self, run_id: str, name: str) -> tuple[int, str | bytes] | None:
        """(seq, the row's value as stored) when the projection covers the run's last seq."""
        with self._reading("get_projection") as conn:
            row = conn.execute(
                "SELECT p.seq, p.json, (SELECT MAX(seq) FROM events e WHERE e.run_id = p.run_id) "
                "FROM projections p WHERE p.run_id = ? AND p.name = ?",
                (run_id, name),
            ).fetchone()
        if row is None or row[0] != row[2]:
            return None
        return int(row[0]), row[1]

    def _stored_run_result(self, run_id: str) -> RunResult | None:
        """The ``run_result`` kept at rest, its cases read when they are used
        (``lazy_run_result``): a re-run of a finished run reads one line of it. None when
        this store has folded the run, when none covers the run's last seq, or when it is
        not a compressed text laid out a line of cases at a time (``_projection_json`` is
        then read whole)."""
        cache = self._projections()
        with cache.lock:  # as ``_projection_json``: no folder starts while the row is read
            if run_id in cache.folders:
                return None
            row = self._persisted_row(run_id, "run_result")
        if row is None or not isinstance(row[1], bytes):
            return None
        value = row[1]
        try:
            first = zlib.decompressobj(WBITS).decompress(value, _FIRST_LINE_MAX)
        except zlib.error:
            return None  # read whole, it is reported and folded instead
        end = first.find(b"\n")
        if end < 0:
            return None
        path = self.path

        def text() -> bytes:
            try:
                whole = stored_text(value)
            except zlib.error as exc:
                raise StoreError(
                    f"the result of run {run_id} kept at rest in {path} is not readable "
                    f"({exc}); run the experiment again with existing_run_policy='resume' "
                    "to fold it from the run's events"
                ) from exc
            assert isinstance(whole, bytes)
            return whole

        result = lazy_run_result(first[:end], text)
        if result is not None:
            self._persisted[(run_id, "run_result")] = row[0]
        return result

    def _stored_text(self, run_id: str, name: str, value: str | bytes) -> str | bytes | None:
        """The JSON of a stored row; None (the projection is then folded) when its BLOB
        is not a compressed text."""
        try:
            return stored_text(value)
        except zlib.error as exc:
            log.warning(
                "store.projection_unreadable",
                path=self.path,
                run_id=run_id,
                name=name,
                error=str(exc),
            )
            return None

    def _persist_projection(self, run_id: str, name: str, seq: int, payload: Any) -> None:
        if self._persisted.get((run_id, name)) == seq:
            return
        text = _HandOff(compressed(json.dumps(payload, separators=(",", ":"))))
        self._persist_projection_text(run_id, name, seq, text)

    def _persist_projection_text(self, run_id: str, name: str, seq: int, text: _HandOff) -> None:
        """Write ``text`` (compressed, taken out of its hand-off) as projection ``name`` at
        ``seq``."""
        if text.text is None:
            return
        with self._writing("get_projection") as conn:
            conn.create_function(_HAND_OFF_FUNCTION, 0, text.take)
            try:
                # Written only while the log still ends at ``seq``: a resume that appended in
                # the meantime makes the payload stale, and then it is not worth keeping.
                conn.execute(_INSERT_HANDED_OFF, (run_id, name, seq, run_id, seq))
            finally:
                text.text = None  # not taken: the log has moved on
                conn.create_function(_HAND_OFF_FUNCTION, 0, None)  # let go of ``text``
        self._persisted[(run_id, name)] = seq

    def _build_projection_folder(self, snapshot: RunSnapshot) -> ProjectionFolder:
        """The run's folder from the fold state kept at rest and the events appended after
        it; from the whole log when no state is kept or it does not fit the log."""
        run_id = snapshot.run_id
        with self._reading("get_projection") as conn:
            row = conn.execute(
                "SELECT seq, json FROM projections WHERE run_id = ? AND name = ?",
                (run_id, _FOLD_STATE),
            ).fetchone()
        if row is not None:
            seq = int(row[0])
            text = self._stored_text(run_id, _FOLD_STATE, row[1])
            del row  # the compressed text
            folder = None if text is None else self._resume_projection_folder(snapshot, text, seq)
            del text
            if folder is not None:
                return folder
            log.info("store.fold_state_stale", path=self.path, run_id=run_id, seq=seq)
        return super()._build_projection_folder(snapshot)
