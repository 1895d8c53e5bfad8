"""Stage-cache reads of concurrent cases, gathered into one trip to the store's thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from themis.core.protocols import RunStore

__all__ = ["CacheReader"]


class _Lookup:
    __slots__ = ("done", "error", "key", "stage", "value")

    def __init__(self, stage: str, key: str) -> None:
        self.stage = stage
        self.key = key
        self.value: Any = None
        self.error: Exception | None = None
        self.done = anyio.Event()


class CacheReader:
    """``load_stage_cache`` for the case pipelines of one run.

    A store that blocks is read in a worker thread; one thread trip per lookup would cost
    more than the lookup. The cases in flight look up their stages at about the same time,
    so the first lookup waits one turn of the event loop for the others and then reads
    them all in one trip. A store that never blocks is read inline.
    """

    def __init__(self, store: RunStore) -> None:
        self._store = store
        self._inline = not getattr(store, "blocking", True)
        self._pending: list[_Lookup] = []

    async def load(self, stage: str, key: str) -> Any:
        """The cached payload or None; raises what the store's read raised."""
        if self._inline:
            return self._store.load_stage_cache(stage, key)
        lookup = _Lookup(stage, key)
        self._pending.append(lookup)
        if len(self._pending) == 1:
            # The first in a batch reads it for everyone, shielded so that cancelling this
            # case never leaves the others waiting.
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0)
                batch, self._pending = self._pending, []
                try:
                    await anyio.to_thread.run_sync(self._read, batch)
                except Exception as exc:
                    for each in batch:
                        each.error = exc
                finally:
                    for each in batch:
                        each.done.set()
        else:
            await lookup.done.wait()
        if lookup.error is not None:
            raise lookup.error
        return lookup.value

    def _read(self, batch: list[_Lookup]) -> None:
        load = self._store.load_stage_cache
        for lookup in batch:
            try:
                lookup.value = load(lookup.stage, lookup.key)
            except Exception as exc:
                lookup.error = exc
