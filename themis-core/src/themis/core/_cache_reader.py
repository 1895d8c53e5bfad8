"""Stage-cache reads of concurrent cases, gathered into one trip to the store's thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from themis.core.protocols import RunStore

__all__ = ["CacheReader"]


class _Lookup:
    __slots__ = ("error", "key", "stage", "value")

    def __init__(self, stage: str, key: str) -> None:
        self.stage = stage
        self.key = key
        self.value: Any = None
        self.error: Exception | None = None


class _Batch:
    """The lookups gathered for one trip, and the event their waiters share."""

    __slots__ = ("done", "lookups")

    def __init__(self) -> None:
        self.lookups: list[_Lookup] = []
        # One event per batch, not per lookup: creating an anyio event asks for the async
        # backend, which cost more than the rest of a lookup on the loop.
        self.done = anyio.Event()


class CacheReader:
    """``load_stage_cache`` for the case pipelines of one run.

    A store that blocks is read in a worker thread; one thread trip per lookup would cost
    more than the lookup. The cases in flight look up their stages at about the same time,
    so the first lookup waits one turn of the event loop for the others and then reads
    them all in one trip, in one call when the store has ``_load_stage_cache_many``. A store
    that never blocks is read inline, and so is a batch that a blocking store's
    ``_load_stage_cache_many_nowait`` answers (it returns None when it would have to wait).
    A key the store's ``_stage_cache_absent`` knows to be missing is not read at all.
    """

    def __init__(self, store: RunStore) -> None:
        self._store = store
        self._inline = not getattr(store, "blocking", True)
        # A blocking store may still answer some reads at once (see ``_read_now``).
        self._nowait = getattr(store, "_load_stage_cache_many_nowait", None)
        # A store may know a key is absent without reading (``_stage_cache_absent``).
        self._absent = getattr(store, "_stage_cache_absent", None)
        self._batch: _Batch | None = None

    def absent(self, stage: str, key: str) -> bool:
        """True when the store knows ``key`` is not cached: ``load`` would answer None.

        Asked before ``load`` by the stages, so that a certain miss costs no coroutine."""
        absent = self._absent
        return absent is not None and absent(stage, key)

    async def load(self, stage: str, key: str) -> Any:
        """The cached payload or None; raises what the store's read raised."""
        if self._inline:
            return self._store.load_stage_cache(stage, key)
        absent = self._absent
        if absent is not None and absent(stage, key):
            return None
        lookup = _Lookup(stage, key)
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            batch.lookups.append(lookup)
            # The first in a batch reads it for everyone, shielded so that cancelling this
            # case never leaves the others waiting.
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0)
                self._batch = None
                try:
                    if not self._read_now(batch.lookups):
                        await anyio.to_thread.run_sync(self._read, batch.lookups)
                except Exception as exc:
                    for each in batch.lookups:
                        each.error = exc
                finally:
                    batch.done.set()
        else:
            batch.lookups.append(lookup)
            await batch.done.wait()
        if lookup.error is not None:
            raise lookup.error
        return lookup.value

    def _read_now(self, batch: list[_Lookup]) -> bool:
        """Read the batch on the loop when the store can answer without waiting."""
        nowait = self._nowait
        if nowait is None:
            return False
        try:
            values = nowait([(lookup.stage, lookup.key) for lookup in batch])
        except Exception as exc:
            for lookup in batch:
                lookup.error = exc
            return True
        if values is None:
            return False
        for lookup, value in zip(batch, values, strict=True):
            lookup.value = value
        return True

    def _read(self, batch: list[_Lookup]) -> None:
        many = getattr(self._store, "_load_stage_cache_many", None)
        if many is not None and len(batch) > 1:
            # One query for the batch: a lookup alone costs the store more than its row.
            try:
                values = many([(lookup.stage, lookup.key) for lookup in batch])
            except Exception as exc:
                for lookup in batch:
                    lookup.error = exc
                return
            for lookup, value in zip(batch, values, strict=True):
                lookup.value = value
            return
        load = self._store.load_stage_cache
        for lookup in batch:
            try:
                lookup.value = load(lookup.stage, lookup.key)
            except Exception as exc:
                lookup.error = exc
