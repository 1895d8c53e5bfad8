"""The single writer of a run: batches events into ``append_events`` (group commit)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from themis.core._event_log import event_of
from themis.core.errors import StoreError, TransientStoreError
from themis.core.events import (
    CaseFailedEvent,
    EvaluationFailedEvent,
    GenerationFailedEvent,
    ParseFailedEvent,
    ReductionFailedEvent,
    RunEvent,
    ScoreFailedEvent,
    SelectionFailedEvent,
    StepFailedEvent,
)
from themis.core.logs import get_logger
from themis.core.stores import BaseRunStore

if TYPE_CHECKING:
    from themis.core._observers import Observers
    from themis.core.protocols import RunStore

__all__ = ["EventWriter", "call_store"]

# The most batches whose fold waits for an idle turn of the loop (see ``_catch_up_when_idle``):
# a run that keeps the loop busy still folds as it goes, in chunks of this many batches.
IDLE_BATCHES = 16

log = get_logger(__name__)

# Any of these marks its case as failed (API §5.6); a progress handle counts such cases.
_CASE_FAILURES: frozenset[type[RunEvent]] = frozenset(
    {
        GenerationFailedEvent,
        SelectionFailedEvent,
        ReductionFailedEvent,
        ParseFailedEvent,
        ScoreFailedEvent,
        EvaluationFailedEvent,
        CaseFailedEvent,
        StepFailedEvent,
    }
)


async def call_store(store: RunStore, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync store method inline when the store says it never blocks, else in a thread."""
    if getattr(store, "blocking", True):
        return await anyio.to_thread.run_sync(fn, *args)
    return fn(*args)


class EventWriter:
    """Collects events from every case task and appends them in batches, in ``seq`` order.

    Producers call ``emit`` (cheap, synchronous); the writer task flushes when a batch is
    full or the flush interval passes. ``flush`` writes everything pending right away and is
    used for run-level events and at the end of a run. ``on_event`` observers see each event
    only after the batch that holds it has been appended.

    ``emit`` takes an event or the record of one (``record_maker``): a store that offers
    ``_items_appender`` gets the batch as it is, with its first seq; any other store gets
    the events the records stand for, each with its seq.
    """

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        *,
        next_seq: int,
        batch_size: int,
        flush_interval: float,
        retry_attempts: int,
        retry_delay: float,
        observers: Observers,
        track_failures: bool = False,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._seq = next_seq
        self._batch_size = batch_size
        self._interval = flush_interval
        self._retry_attempts = max(1, retry_attempts)
        self._retry_delay = max(0.0, retry_delay)
        self._observers = observers
        # Events and records (see the class's docstring), in emit order.
        self._buffer: list[Any] = []
        self._blobs: dict[str, tuple[bytes, str]] = {}
        self._cache_writes: list[tuple[str, str, Any]] = []
        self._wake = anyio.Event()
        self._room = anyio.Event()
        self._lock = anyio.Lock()
        self._high_water = batch_size * 4
        # A store whose writer process takes the batches (``_pipelined_appender``): a batch
        # handed over may not be committed yet. Such batches wait here, in order, with their
        # first and last seq, until the store says they are; only then do observers see them.
        pipelined = getattr(store, "_pipelined_appender", None)
        self._pipeline: tuple[Callable[..., int], Callable[[], int | None]] | None = (
            pipelined() if pipelined is not None else None
        )
        self._in_flight: deque[tuple[int, int, list[Any]]] = deque()
        self._committed: int | None = None
        # The loop's ``call_when_idle`` (False when it has none), once looked up; whether
        # a catch-up waits for an idle turn.
        self._when_idle: Any = None
        self._idle_pending = False
        self._idle_waiting = 0
        self._idle_handle: Any = None
        self._caught_up_once = False
        self.failure: BaseException | None = None
        # The case keys that got a failure event, kept only when progress is tracked.
        self.failed_keys: set[str | None] | None = set() if track_failures else None
        # A store in this process that builds projections on read is asked for the run's
        # folder after each batch: it then folds as the run goes, in the gaps the model
        # calls leave, and the read of the result at the end finds it done.
        self._keep_folded = isinstance(store, BaseRunStore) and not getattr(store, "blocking", True)
        # A blocking store may still take a batch's cache writes at once, on the loop, when
        # that costs it no I/O (see ``_write_cache_now``).
        appender = getattr(store, "_items_appender", None)
        self._append_items: Callable[[str, list[Any], int], None] | None = (
            appender() if appender is not None else None
        )
        self._cache_nowait: Callable[[list[tuple[str, str, Any]]], bool] | None = (
            getattr(store, "_store_stage_cache_many_nowait", None)
            if getattr(store, "blocking", True)
            else None
        )

    @property
    def takes_records(self) -> bool:
        """Whether the store takes records as they are (``record_maker``): producers that
        can make either should then make records, else events."""
        return self._append_items is not None

    @property
    def last_seq(self) -> int:
        return self._seq

    def emit(self, event: RunEvent | tuple[Any, ...]) -> None:
        self._buffer.append(event)
        if self.failed_keys is not None and type(event) in _CASE_FAILURES:
            self.failed_keys.add(getattr(event, "case_key", None))
        # Once per full batch: the writer task may not run for a while after the first
        # wake (producers that never suspend keep the loop busy), and waking it on every
        # emit in between cost two calls per event (about 1% of an instant run).
        if len(self._buffer) % self._batch_size == 0:
            self._wake.set()

    def discard_pending(self) -> int:
        """Drop every event, blob and cache write not yet written; return the event count.

        Used after a store failure: the next event then takes the first unwritten seq.
        """
        dropped = len(self._buffer)
        self._buffer, self._blobs, self._cache_writes = [], {}, []
        return dropped

    def add_blob(self, data: bytes, media_type: str) -> str:
        """Queue a content-addressed blob for the next batch and return its ref."""
        ref = "sha256:" + hashlib.sha256(data).hexdigest()
        self._blobs.setdefault(ref, (data, media_type))
        return ref

    def add_cache_write(self, stage: str, key: str, payload: Any) -> None:
        self._cache_writes.append((stage, key, payload))

    def backpressure(self) -> Coroutine[Any, Any, None] | None:
        """``wait_for_room()`` to await when the writer is far behind, else None: a
        producer between cases checks at the cost of a call, not of a coroutine."""
        if len(self._buffer) >= self._high_water:
            return self.wait_for_room()
        return None

    async def wait_for_room(self) -> None:
        """Apply backpressure: producers wait while the writer is far behind."""
        while len(self._buffer) >= self._high_water:
            self._wake.set()
            if self._room.is_set():
                self._room = anyio.Event()
            await self._room.wait()

    async def run(self) -> None:
        """The writer task: flush on a full batch or when the interval passes."""
        try:
            while True:
                # A full batch that piled up while the last one was written goes at once:
                # ``emit`` wakes the writer only as the buffer reaches each multiple of it.
                if len(self._buffer) < self._batch_size:
                    with anyio.move_on_after(self._interval):
                        await self._wake.wait()
                self._wake = anyio.Event()
                await self.flush(settle=False)
        finally:
            # The run is over: the read of its result catches the folder up, and a
            # catch-up in a later idle turn would only build its case results again.
            idle = self._idle_handle
            if idle is not None:
                idle.cancel()
                self._idle_handle = None
                self._idle_pending = False

    async def flush(self, *, settle: bool = True) -> None:
        """Write everything pending; with ``settle`` (the default), return only once all of
        it is committed, batches handed to a writer process included."""
        async with self._lock:
            while True:
                while self._buffer or self._blobs or self._cache_writes:
                    await self._write_pending()
                if not (settle and self._in_flight):
                    return
                await self._settle()

    async def _settle(self) -> None:
        """Wait for every batch in flight; a failure puts them back in the buffer."""
        assert self._pipeline is not None
        with anyio.CancelScope(shield=True):
            try:
                committed = await self._with_retries("append_events", self._pipeline[1])
            except StoreError as exc:
                if not await self._take_back(exc):
                    raise
                return
        await self._release(committed)

    async def _take_back(self, exc: StoreError) -> bool:
        """After a writer process failed (``UncommittedBatches``): hand observers the
        batches it committed, and put every batch it did not back at the head of the
        buffer, in order, numbered again from the first seq it names. False for any other
        failure."""
        first = getattr(exc, "first_seq", None)
        if first is None:
            return False
        await self._release(first - 1)
        uncommitted: list[Any] = []
        while self._in_flight:
            start, _, items = self._in_flight.popleft()
            if start >= first:
                uncommitted.extend(items)
        self._buffer[:0] = uncommitted
        self._seq = first - 1
        log.warning(
            "store.writer_process_failed", run_id=self._run_id, first_seq=first, error=str(exc)
        )
        return True

    async def _release(self, committed: int | None) -> None:
        """Hand observers the batches in flight that are committed through ``committed``."""
        while self._in_flight and committed is not None and self._in_flight[0][1] <= committed:
            start, _, items = self._in_flight.popleft()
            if self._observers.has_on_event:
                for seq, item in enumerate(items, start):
                    await self._observers.on_event(event_of(item, seq))

    async def _write_pending(self) -> None:
        batch, self._buffer = self._buffer, []
        blobs, self._blobs = self._blobs, {}
        cache_writes, self._cache_writes = self._cache_writes, []
        if self._pipeline is not None:
            # The store writes the batch in another process: producers fill the next one
            # meanwhile, instead of waiting for the commit.
            self._room.set()
        # A batch taken from the buffer is written whole, even while the run is cancelled:
        # dropping it while later events still get written (run_failed's flush) would leave
        # holes, such as a score stored without its generation, that a resume cannot mend.
        with anyio.CancelScope(shield=True):
            try:
                events = await self._commit(batch, blobs, cache_writes)
            except BaseException as exc:
                # Put it all back in order, so that the best-effort flush of run_failed
                # retries it with the same seq numbers instead of skipping past it.
                self._buffer[:0] = batch
                self._blobs = {**blobs, **self._blobs}
                self._cache_writes[:0] = cache_writes
                if isinstance(exc, StoreError) and await self._take_back(exc):
                    return  # written again by the store itself, in the next turn of flush
                raise
        if self._pipeline is not None and batch:
            await self._release(self._committed)
            self._room.set()
            return
        if self._keep_folded and batch:
            if len(batch) >= self._high_water:
                # A batch this large means producers outran the writer and wait for room:
                # the run is bound by CPU, and building results early would only delay them.
                self._catch_up_projections(prepare=False)
            elif not self._catch_up_when_idle():
                self._catch_up_projections(prepare=True)
        self._room.set()
        if self._observers.has_on_event:
            if events is None:
                first = self._seq - len(batch) + 1
                events = [event_of(item, seq) for seq, item in enumerate(batch, first)]
            for event in events:
                await self._observers.on_event(event)

    async def _commit(
        self,
        batch: list[Any],
        blobs: dict[str, tuple[bytes, str]],
        cache_writes: list[tuple[str, str, Any]],
    ) -> list[RunEvent] | None:
        """Write a batch; return the events appended when they had to be made from its
        records (None when the store took the batch as it is, or it held no record)."""
        for data, media_type in blobs.values():
            await self._with_retries("store_blob", self._store.store_blob, data, media_type)
        first = seq = self._seq + 1
        has_records = False
        for event in batch:
            if type(event) is tuple:
                has_records = True
            else:
                # The event is not shared yet: setting seq in place avoids a copy per event.
                event.__dict__["seq"] = seq
            seq += 1
        events: list[RunEvent] | None = None
        if batch and self._pipeline is not None:
            # The store's answer is the last seq committed so far (``_release`` takes it).
            self._committed = await self._with_retries(
                "append_events", self._pipeline[0], self._run_id, batch, first
            )
            self._in_flight.append((first, seq - 1, batch))
            self._seq = seq - 1
            if cache_writes and not self._write_cache_now(cache_writes):
                await call_store(self._store, self._write_cache, cache_writes)
            return None
        if batch:
            if self._append_items is not None:
                await self._with_retries(
                    "append_events", self._append_items, self._run_id, batch, first
                )
            else:
                if has_records:  # a store that takes events only: the records' events
                    events = [event_of(item, at) for at, item in enumerate(batch, first)]
                await self._with_retries(
                    "append_events",
                    self._store.append_events,
                    self._run_id,
                    batch if events is None else events,
                )
        self._seq = seq - 1
        if cache_writes and not self._write_cache_now(cache_writes):
            # One trip to the store's thread for the batch's cache entries, not one each.
            await call_store(self._store, self._write_cache, cache_writes)
        return events

    def _write_cache_now(self, cache_writes: list[tuple[str, str, Any]]) -> bool:
        """Whether a blocking store took the batch's cache writes on the calling thread.

        A store's ``_store_stage_cache_many_nowait`` stores them all and answers True when
        it can do so without waiting (the SQLite store buffers them in memory), else stores
        none and answers False. On SQLite the loop and the store's thread take turns, so the
        thread trip it saves (about one per batch) was wall time.
        """
        nowait = self._cache_nowait
        if nowait is None:
            return False
        try:
            return nowait(cache_writes)
        except Exception as exc:  # a cache is an optimisation; the thread trip retries it
            log.warning("stage_cache.write_failed", error=str(exc))
            return False

    def _write_cache(self, cache_writes: list[tuple[str, str, Any]]) -> None:
        store = self._store
        for stage, key, payload in cache_writes:
            try:
                store.store_stage_cache(stage, key, payload)
            except Exception as exc:  # a cache is an optimisation; never fail the run on it
                log.warning("stage_cache.write_failed", stage=stage, error=str(exc))

    def _catch_up_when_idle(self) -> bool:
        """Leave the catch-up to the loop's next idle turn (see ``call_when_idle``); False
        when the loop cannot do that."""
        if not self._caught_up_once:
            # The first catch-up makes the store's folder, which then folds each later
            # batch's records as they are (a folder made at the end would rebuild events).
            self._caught_up_once = True
            return False
        if self._idle_pending:
            self._idle_waiting += 1
            if self._idle_waiting > IDLE_BATCHES:
                self._idle_waiting = 0
                return False
            return True
        when_idle = self._when_idle
        if when_idle is None:
            try:
                loop: Any = asyncio.get_running_loop()
            except RuntimeError:  # not on asyncio
                loop = None
            when_idle = self._when_idle = getattr(loop, "call_when_idle", False)
        if not when_idle:
            return False
        self._idle_pending = True
        self._idle_waiting = 1
        self._idle_handle = when_idle(self._idle_catch_up)
        return True

    def _idle_catch_up(self) -> None:
        self._idle_pending = False
        self._idle_handle = None
        self._catch_up_projections(prepare=True)

    def _catch_up_projections(self, *, prepare: bool) -> None:
        folder_of = getattr(self._store, "projection_folder", None)
        if folder_of is None:
            return
        try:
            folder = folder_of(self._run_id)
            prepare_result = getattr(folder, "prepare_run_result", None) if prepare else None
            if prepare_result is not None:
                prepare_result()
        except Exception as exc:  # the read of the result will report it
            log.warning("projection.catch_up_failed", run_id=self._run_id, error=str(exc))

    async def _with_retries(self, operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call_store(self._store, fn, *args)
            except TransientStoreError as exc:
                if attempt >= self._retry_attempts:
                    raise StoreError(
                        f"{type(self._store).__name__}.{operation} failed after {attempt} "
                        f"attempts for run {self._run_id}: {exc}; fix the store and resume"
                    ) from exc
                log.warning("store.retry", operation=operation, attempt=attempt, error=str(exc))
                await anyio.sleep(self._retry_delay * attempt)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(
                    f"{type(self._store).__name__}.{operation} failed for run "
                    f"{self._run_id}: {type(exc).__name__}: {exc}"
                ) from exc
