"""Run stores: the base class third parties extend, the in-memory store and the factory."""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar

from themis.core._event_log import EventLog, event_of
from themis.core._fold_speed import paused_gc
from themis.core.errors import ComponentContractError, StoreConflictError, StoreError
from themis.core.events import RunEvent
from themis.core.logs import get_logger
from themis.core.projections import ProjectionFolder, build_projection, check_projection_name
from themis.core.snapshot import RunSnapshot, StoredRun

if TYPE_CHECKING:
    from themis.core._fold import PayloadLoader
    from themis.core._projection_cases import CorpusScorer
    from themis.core.config import StorageConfig
    from themis.core.protocols import RunStore

__all__ = [
    "BaseRunStore",
    "InMemoryRunStore",
    "available_store_backends",
    "create_run_store",
    "memory_store",
    "register_store_backend",
]

log = get_logger(__name__)

_seq_of = attrgetter("seq")
# Guards the lazy creation of a store's projection cache (see ``_projections``).
_CACHE_INIT_LOCK = threading.Lock()
# Projections with a row per event (or per record): a resumed folder has only its own.
_HISTORY_PROJECTIONS = frozenset({"timeline_view", "trace_view"})


def blob_payload_loader(store: RunStore) -> PayloadLoader:
    """A loader that turns a ``*_blob_ref`` into the JSON payload stored under it."""
    name = type(store).__name__

    def load(ref: str) -> dict[str, Any]:
        found = store.load_blob(ref)
        if found is None:
            raise StoreError(
                f"{name}.load_blob: blob {ref} is missing, so an event's payload cannot be "
                "read; the store lost it or the run was imported without its blobs "
                "(re-import the run bundle, which carries them)"
            )
        media_type, data = found
        try:
            payload = json.loads(data)
        except ValueError as exc:
            raise StoreError(
                f"{name}.load_blob: blob {ref} ({media_type}) is not JSON, so it is not an "
                "event payload; check the ref the event carries"
            ) from exc
        if not isinstance(payload, dict):
            raise StoreError(
                f"{name}.load_blob: blob {ref} holds a JSON {type(payload).__name__}, "
                "not the object an event payload must be"
            )
        return payload

    return load


class _Projections:
    """A store's per-run projection folders, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.folders: dict[str, ProjectionFolder] = {}
        self.corpus_scorers: dict[str, dict[str, CorpusScorer]] = {}


def _from_log(folder: ProjectionFolder, name: str) -> bool:
    """Whether projection ``name`` is built from the log rather than read from ``folder``:
    a folder resumed from a kept state has no history before it, and a store's folder
    keeps no timeline rows (a row per event, for a view that is seldom read)."""
    if name == "timeline_view" and not folder.keeps_timeline:
        return True
    return name in _HISTORY_PROJECTIONS and not getattr(folder, "complete_history", True)


def _same_event(a: RunEvent, b: RunEvent) -> bool:
    # Identity of an appended event for staleness checks: after clear_run and a new run
    # the event under a seq has another type or timestamp.
    return a.seq == b.seq and a.event_type == b.event_type and a.occurred_at == b.occurred_at


class BaseRunStore(ABC):
    """Write the eight primitives; get projections (built on read), resume and the rest.

    Projections are folded by a per-run ``ProjectionFolder`` cached in the store, which
    catches up through ``query_events`` on every ``get_projection`` call. A store that
    folds on append calls ``_fold_appended(run_id, events)`` at the end of a successful
    ``append_events``; ``clear_run`` implementations call ``_forget_projections(run_id)``.
    Override ``_new_projection_folder`` to seed a folder differently, and
    ``_build_projection_folder`` to start it from a state kept at rest instead of the log.
    """

    # Whether calls must leave the event loop (run in a worker thread) during a run.
    blocking: ClassVar[bool] = True

    # -- the eight primitives ---------------------------------------------------------

    @abstractmethod
    def initialize(self) -> None:
        """Create the schema; idempotent."""

    @abstractmethod
    def persist_snapshot(self, snapshot: RunSnapshot) -> None:
        """Store ``snapshot``; the first write wins, another identity under its id conflicts."""

    @abstractmethod
    def load_snapshot(self, run_id: str) -> RunSnapshot | None:
        """The stored snapshot of ``run_id``, or None."""

    @abstractmethod
    def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None:
        """Append atomically, in order; a repeated identical ``seq`` is a no-op."""

    @abstractmethod
    def query_events(
        self,
        run_id: str,
        *,
        after_seq: int | None = None,
        event_types: Collection[str] | None = None,
    ) -> list[RunEvent]:
        """The run's events in ``seq`` order, after ``after_seq`` and of ``event_types``."""

    @abstractmethod
    def store_blob(self, blob: bytes, media_type: str) -> str:
        """Store ``blob`` content-addressed and return ``"sha256:<hex>"``; idempotent."""

    @abstractmethod
    def load_blob(self, ref: str) -> tuple[str, bytes] | None:
        """``(media_type, bytes)`` of a stored blob, or None."""

    @abstractmethod
    def clear_run(self, run_id: str) -> None:
        """Remove the run's snapshot, events and projection state; keep blobs and cache."""

    # -- provided ---------------------------------------------------------------------

    def close(self) -> None:
        """Release resources (the cached projection folders); idempotent."""
        cache = self._projections()
        with cache.lock:
            cache.folders.clear()

    def list_runs(self) -> list[str]:
        """Optional; this store cannot list its runs."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot list its runs; select a run by id "
            "(--run-id), or implement list_runs() in the store"
        )

    def load_stage_cache(self, stage: str, key: str) -> Any:
        """No stage cache: always a miss."""
        return None

    def store_stage_cache(self, stage: str, key: str, payload: Any) -> None:
        """No stage cache: the payload is dropped."""
        return None

    def _load_stage_cache_many(self, items: Sequence[tuple[str, str]]) -> list[Any]:
        """``load_stage_cache`` of each ``(stage, key)``, in order; override to read them in
        one query."""
        return [self.load_stage_cache(stage, key) for stage, key in items]

    def resume(self, run_id: str) -> StoredRun | None:
        """The stored snapshot with every event, or None when no snapshot is stored."""
        snapshot = self.load_snapshot(run_id)
        if snapshot is None:
            return None
        # The events come from the store already validated; skip re-validating each.
        return StoredRun.model_construct(snapshot=snapshot, events=self.query_events(run_id))

    def persist_event(self, event: RunEvent) -> None:
        """Append one event, giving it the next ``seq`` when it has none."""
        if event.seq is None:
            event = event.model_copy(update={"seq": self._last_seq(event.run_id) + 1})
        self.append_events(event.run_id, [event])

    def load_payload(self, ref: str) -> dict[str, Any]:
        """The JSON payload stored as blob ``ref`` (what projections resolve refs with)."""
        return blob_payload_loader(self)(ref)

    def get_projection(self, run_id: str, name: str) -> Any:
        """Projection ``name`` as a JSON dict, reflecting every appended event; None if unknown."""
        check_projection_name(name)
        cache = self._projections()
        with cache.lock:
            folder = self._caught_up_folder(run_id, cache)
            if folder is None:
                return None
            if _from_log(folder, name):
                return build_projection(
                    name,
                    folder.snapshot,
                    self.query_events(run_id),
                    load_payload=blob_payload_loader(self),
                    corpus_scorers=cache.corpus_scorers.get(run_id),
                )
            return folder.payload(name)

    def _projection_json(self, run_id: str, name: str) -> str | bytes | None:
        """Projection ``name`` as JSON text (or its UTF-8 bytes) when the store keeps it so
        (None: use ``get_projection``). Validating a large result from its text is several
        times cheaper than decoding it to dicts first."""
        return None

    def _has_snapshot(self, run_id: str) -> bool:
        """Whether a snapshot is stored for ``run_id``; override when that is cheaper than
        loading it (a snapshot holds every case of the run's datasets)."""
        return self.load_snapshot(run_id) is not None

    def projection_folder(self, run_id: str) -> ProjectionFolder | None:
        """The run's cached folder, caught up with the log; None for an unknown run."""
        cache = self._projections()
        with cache.lock:
            return self._caught_up_folder(run_id, cache)

    def set_corpus_scorers(self, run_id: str, corpus_scorers: Mapping[str, CorpusScorer]) -> None:
        """Fill ``metric_aggregates`` of the run's ``benchmark_result`` with these scorers."""
        cache = self._projections()
        with cache.lock:
            cache.corpus_scorers[run_id] = dict(corpus_scorers)
            folder = cache.folders.get(run_id)
            if folder is not None:
                folder.set_corpus_scorers(corpus_scorers)

    # -- hooks for subclasses ---------------------------------------------------------

    def _new_projection_folder(self, snapshot: RunSnapshot) -> ProjectionFolder:
        """An empty folder for ``snapshot`` that resolves blobs through this store."""
        scorers = self._projections().corpus_scorers.get(snapshot.run_id)
        # No timeline rows: the log has the timeline, and ``get_projection`` reads it there.
        return ProjectionFolder(
            snapshot,
            load_payload=blob_payload_loader(self),
            corpus_scorers=scorers,
            keep_timeline=False,
        )

    def _fold_appended(
        self, run_id: str, events: Sequence[RunEvent], items: Sequence[Any] | None = None
    ) -> None:
        """Fold just-appended events into a cached folder (fold on append); else do nothing.

        ``items``, when given, are what ``events`` stand for as the writer handed them
        (events and records, see ``EventWriter``), in seq order: the fold reads those."""
        if events and events[0].seq is not None:
            seqs = [event.seq or 0 for event in events]
            self._fold_appended_items(run_id, events if items is None else items, seqs)

    def _fold_appended_items(self, run_id: str, items: Sequence[Any], seqs: Sequence[int]) -> None:
        """``_fold_appended`` of a batch as the writer handed it: events and records, with
        their seqs (``ProjectionFolder.apply_items``)."""
        cache = self._projections()
        with cache.lock:
            folder = cache.folders.get(run_id)
            if folder is None or not items:
                return
            if seqs[0] > folder.last_seq + 1:
                return  # a gap: catching up on read will fill it
            folder.apply_items(items, seqs)

    def _build_projection_folder(self, snapshot: RunSnapshot) -> ProjectionFolder:
        """A folder that has folded the run's whole log; override to start from a state
        kept at rest (see ``_resume_projection_folder``)."""
        folder = self._new_projection_folder(snapshot)
        folder.apply_all(self.query_events(snapshot.run_id))
        return folder

    def _resume_projection_folder(
        self, snapshot: RunSnapshot, fold_state: str | bytes, seq: int
    ) -> ProjectionFolder | None:
        """A folder that continues from ``fold_state`` (``_fold_state_text`` of a folder
        whose last event was ``seq``), folding only the events appended since.

        None when the text cannot be read or the log no longer holds that event (the run
        was cleared and run again): the caller then folds the whole log.
        """
        # Imported here: only a store that keeps fold states needs them (not a run in
        # memory, nor the CLI's start-up).
        from themis.core._fold_state import decode_fold_state, resumed_folder

        run_id = snapshot.run_id
        load_payload = blob_payload_loader(self)
        try:
            resumed = decode_fold_state(fold_state, snapshot=snapshot, load_payload=load_payload)
        except ValueError as exc:
            log.warning(
                "store.fold_state_unreadable",
                store=type(self).__name__,
                run_id=run_id,
                error=str(exc)[:200],
            )
            return None
        if resumed.seq != seq or resumed.state.run_id != run_id:
            return None
        # From the state's last event on: reading it back proves the log is the same one.
        tail = self.query_events(run_id, after_seq=seq - 1)
        scorers = self._projections().corpus_scorers.get(run_id)
        return resumed_folder(
            snapshot, resumed, tail, load_payload=load_payload, corpus_scorers=scorers
        )

    @staticmethod
    def _fold_state_text(folder: ProjectionFolder) -> str | None:
        """The folder's state as text for ``_resume_projection_folder``; None when empty."""
        from themis.core._fold_state import encode_fold_state

        return encode_fold_state(folder)

    @staticmethod
    def _fold_state_payload(fold_state: str | bytes) -> dict[str, Any]:
        """The ``execution_state`` projection held in a fold state's text."""
        from themis.core._fold_state import decode_fold_state

        with paused_gc():
            return decode_fold_state(fold_state).state.model_dump(mode="json")

    def _forget_projections(self, run_id: str) -> None:
        """Drop the run's cached folder (``clear_run`` calls this)."""
        cache = self._projections()
        with cache.lock:
            cache.folders.pop(run_id, None)

    def _last_seq(self, run_id: str) -> int:
        """The highest stored ``seq`` of the run (0 when none); override when cheaper."""
        events = self.query_events(run_id)
        return max((e.seq or 0 for e in events), default=0)

    # -- internals --------------------------------------------------------------------

    def _projections(self) -> _Projections:
        # Created lazily so a subclass that never calls super().__init__() still works.
        cache: _Projections | None = self.__dict__.get("_themis_projections")
        if cache is None:
            with _CACHE_INIT_LOCK:
                cache = self.__dict__.setdefault("_themis_projections", _Projections())
        return cache

    def _caught_up_folder(self, run_id: str, cache: _Projections) -> ProjectionFolder | None:
        folder = cache.folders.get(run_id)
        if folder is not None:
            if self._catch_up(run_id, folder):
                return folder
            log.debug("store.projection_rebuilt", store=type(self).__name__, run_id=run_id)
            del cache.folders[run_id]
        snapshot = self.load_snapshot(run_id)
        if snapshot is None:
            return None
        folder = self._build_projection_folder(snapshot)
        cache.folders[run_id] = folder
        return folder

    def _catch_up(self, run_id: str, folder: ProjectionFolder) -> bool:
        """Fold the events appended since the folder's last one; False when it is stale."""
        last = folder.last_event
        if last is None or last.seq is None:
            return False  # nothing folded yet: rebuilding costs no more and rereads the snapshot
        # Reading from the last folded event proves the log was not cleared and rewritten.
        events = self.query_events(run_id, after_seq=last.seq - 1)
        if not events or not _same_event(events[0], last):
            return False
        folder.apply_all(events[1:])
        return True


class InMemoryRunStore(BaseRunStore):
    """A store in dicts; a run lives as long as the instance. Builds projections on read."""

    blocking: ClassVar[bool] = False

    def __init__(self) -> None:
        self._snapshots: dict[str, RunSnapshot] = {}
        self._logs: dict[str, EventLog] = {}
        self._blobs: dict[str, tuple[str, bytes]] = {}

    def initialize(self) -> None:
        """Nothing to create."""

    def persist_snapshot(self, snapshot: RunSnapshot) -> None:
        run_id = snapshot.run_id
        stored = self._snapshots.get(run_id)
        if stored is None:
            self._snapshots[run_id] = snapshot
            return
        if stored is snapshot:
            return
        if stored.identity.compute_hash() != snapshot.identity.compute_hash():
            raise StoreConflictError(
                f"InMemoryRunStore.persist_snapshot: run {run_id} is stored with another "
                "identity; a snapshot's run_id must be the hash of its identity, so "
                "recompile the experiment instead of editing its snapshot"
            )

    def load_snapshot(self, run_id: str) -> RunSnapshot | None:
        return self._snapshots.get(run_id)

    def _has_snapshot(self, run_id: str) -> bool:
        return run_id in self._snapshots

    def list_runs(self) -> list[str]:
        return list(self._snapshots)

    def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None:
        if not events:
            return
        log_ = self._logs.get(run_id)
        if log_ is None:
            log_ = self._logs[run_id] = EventLog()
        # Fast path (every run's batches): seqs strictly after what is stored, in order.
        previous = log_.last_seq()
        for event in events:
            seq = event.seq
            if seq is None or seq <= previous or event.run_id != run_id:
                break
            previous = seq
        else:
            log_.extend(events)
            return
        self._append_checked(run_id, log_, events)

    def _items_appender(self) -> Callable[[str, list[Any], int], None] | None:
        """``EventWriter``'s way in: ``_append_items``, unless a subclass changed how events
        are appended or read (then it must see every event as one)."""
        cls = type(self)
        if (
            cls.append_events is InMemoryRunStore.append_events
            and cls.query_events is InMemoryRunStore.query_events
        ):
            return self._append_items
        return None

    def _append_items(self, run_id: str, items: list[Any], first_seq: int) -> None:
        """``append_events`` of a batch of events and records (``record_maker``), whose seqs
        run from ``first_seq`` on: the log keeps the records as they are."""
        if not items:
            return
        log_ = self._logs.get(run_id)
        if log_ is None:
            log_ = self._logs[run_id] = EventLog()
        if first_seq > log_.last_seq():
            log_.extend_items(items, first_seq)
            return
        events = [event_of(item, seq) for seq, item in enumerate(items, first_seq)]
        self._append_checked(run_id, log_, events)

    def _catch_up(self, run_id: str, folder: ProjectionFolder) -> bool:
        """``BaseRunStore._catch_up`` on the log's records as they are kept (see
        ``ProjectionFolder.apply_items``): no event is rebuilt for the fold."""
        log_ = self._logs.get(run_id)
        last = folder.last_item
        own_reads = type(self).query_events is InMemoryRunStore.query_events
        if log_ is None or last is None or not own_reads:
            return super()._catch_up(run_id, folder)
        last_seq = folder.last_seq
        # The item the folder folded last is still held under its seq: the log was not
        # cleared and rewritten (an event of the batch it came in has been packed since).
        held = log_.item_at(last_seq)
        if held is not last and (
            held is None or not _same_event(event_of(held, last_seq), event_of(last, last_seq))
        ):
            return False
        items, seqs = log_.items_after(last_seq)
        if items:
            folder.apply_items(items, seqs)
        return True

    def _append_checked(self, run_id: str, log_: EventLog, events: Sequence[RunEvent]) -> None:
        # Validate the whole batch before changing anything, so a call is all or nothing.
        fresh: dict[int, RunEvent] = {}
        for position, event in enumerate(events):
            seq = event.seq
            if seq is None:
                raise StoreError(
                    f"InMemoryRunStore.append_events: event {position} ({event.event_type}) "
                    f"of run {run_id} has no seq; assign seqs from the stored maximum + 1, "
                    "or append it with persist_event()"
                )
            if event.run_id != run_id:
                raise StoreError(
                    f"InMemoryRunStore.append_events: event seq={seq} belongs to run "
                    f"{event.run_id}, not {run_id}; append it under its own run_id"
                )
            existing = fresh.get(seq)
            if existing is None:
                existing = log_.find(seq)
            if existing is None:
                fresh[seq] = event
            elif existing is not event and existing != event:
                raise StoreConflictError(
                    f"InMemoryRunStore.append_events: run {run_id} already holds a different "
                    f"event under seq={seq} ({existing.event_type}, not {event.event_type}); "
                    "seq must come from the run's single writer, continuing from the "
                    "stored maximum"
                )
        if fresh:
            log_.add_sorted(sorted(fresh.values(), key=_seq_of))

    def query_events(
        self,
        run_id: str,
        *,
        after_seq: int | None = None,
        event_types: Collection[str] | None = None,
    ) -> list[RunEvent]:
        log_ = self._logs.get(run_id)
        if not log_:
            return []
        if event_types is not None and not isinstance(event_types, (set, frozenset)):
            event_types = set(event_types)
        return log_.after(after_seq, event_types)

    def store_blob(self, blob: bytes, media_type: str) -> str:
        data = bytes(blob)
        ref = "sha256:" + hashlib.sha256(data).hexdigest()
        self._blobs.setdefault(ref, (media_type, data))
        return ref

    def load_blob(self, ref: str) -> tuple[str, bytes] | None:
        return self._blobs.get(ref)

    def clear_run(self, run_id: str) -> None:
        self._snapshots.pop(run_id, None)
        self._logs.pop(run_id, None)
        self._forget_projections(run_id)

    def _last_seq(self, run_id: str) -> int:
        log_ = self._logs.get(run_id)
        return log_.last_seq() if log_ else 0


def memory_store() -> InMemoryRunStore:
    """A new, empty in-memory store."""
    return InMemoryRunStore()


def create_run_store(storage: StorageConfig) -> RunStore:
    """The store ``storage`` names (an alias, registry id or import path), built with its params."""
    from themis.core.protocols import RunStore
    from themis.core.registry import get_registry

    store = get_registry().resolve(
        "store", {"id": storage.store, "params": dict(storage.parameters)}
    )
    if not isinstance(store, RunStore):
        raise ComponentContractError(
            f"store {storage.store!r} built a {type(store).__name__}, which is not a "
            "RunStore; register a class that implements the RunStore protocol (subclass "
            "themis.core.stores.BaseRunStore)"
        )
    return store


def register_store_backend(name: str, builder: Callable[[StorageConfig], RunStore]) -> None:
    """Register ``builder`` as store ``local/<name>`` with alias ``<name>``.

    ``builder`` receives a ``StorageConfig`` whose ``parameters`` are the storage params.
    """
    from themis.core.config import StorageConfig
    from themis.core.registry import get_registry

    def build(**params: Any) -> RunStore:
        return builder(StorageConfig(store=name, parameters=params))

    get_registry().register("store", f"local/{name}", build, aliases=(name,))


def available_store_backends() -> list[str]:
    """The names a ``StorageConfig.store`` may use: each store's aliases, else its id."""
    from themis.core.registry import get_registry

    registry = get_registry()
    names: set[str] = set()
    for component_id in registry.ids("store"):
        aliases = registry.describe(component_id).aliases
        names.update(aliases or (component_id,))
    return sorted(names)
