"""The writer hands a batch's cache writes to a blocking store's nowait hook on the loop.

A store that blocks is called in a worker thread; one whose
``_store_stage_cache_many_nowait`` takes the whole batch at once spares that trip. When the
hook declines (answers False) or fails, the writer stores the entries in a worker thread,
one ``store_stage_cache`` each, as before.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import anyio
from themis.core._observers import Observers
from themis.core._writer import EventWriter
from themis.core.events import RunStartedEvent
from themis.core.stores import InMemoryRunStore


class BlockingStore(InMemoryRunStore):
    """An in-memory store with a stage cache that asks to be called in a worker thread."""

    blocking: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.cache: dict[tuple[str, str], Any] = {}
        self.single_writes: list[tuple[str, int]] = []  # (key, thread) per store_stage_cache

    def load_stage_cache(self, stage: str, key: str) -> Any:
        return self.cache.get((stage, key))

    def store_stage_cache(self, stage: str, key: str, payload: Any) -> None:
        self.single_writes.append((key, threading.get_ident()))
        self.cache[(stage, key)] = payload


class NowaitStore(BlockingStore):
    """A blocking store whose nowait hook answers ``answer`` (or raises ``error``)."""

    def __init__(self, answer: bool, error: Exception | None = None) -> None:
        super().__init__()
        self.answer = answer
        self.error = error
        self.nowait_calls: list[tuple[list[str], int]] = []

    def _store_stage_cache_many_nowait(self, entries: list[tuple[str, str, Any]]) -> bool:
        self.nowait_calls.append(([key for _, key, _ in entries], threading.get_ident()))
        if self.error is not None:
            raise self.error
        if not self.answer:
            return False
        for stage, key, payload in entries:
            self.cache[(stage, key)] = payload
        return True


def _write(store: BlockingStore, keys: list[str]) -> None:
    writer = EventWriter(
        store,
        "run-1",
        next_seq=0,
        batch_size=256,
        flush_interval=60.0,
        retry_attempts=1,
        retry_delay=0.0,
        observers=Observers([], None),
    )

    async def main() -> None:
        writer.emit(RunStartedEvent(run_id="run-1"))
        for i, key in enumerate(keys):
            writer.add_cache_write("score", key, {"result": i})
        await writer.flush()

    anyio.run(main)


def test_a_batch_the_hook_takes_is_stored_on_the_loop_in_one_call() -> None:
    store = NowaitStore(answer=True)
    _write(store, ["a", "b"])
    assert store.nowait_calls == [(["a", "b"], threading.get_ident())]
    assert store.single_writes == []  # no worker-thread trip
    assert store.load_stage_cache("score", "a") == {"result": 0}
    assert store.load_stage_cache("score", "b") == {"result": 1}


def test_a_batch_the_hook_declines_is_stored_in_a_worker_thread() -> None:
    store = NowaitStore(answer=False)
    _write(store, ["a", "b"])
    assert [keys for keys, _ in store.nowait_calls] == [["a", "b"]]
    assert [key for key, _ in store.single_writes] == ["a", "b"]
    assert {thread for _, thread in store.single_writes} != {threading.get_ident()}
    assert store.load_stage_cache("score", "b") == {"result": 1}


def test_a_hook_that_fails_leaves_the_batch_to_the_worker_thread() -> None:
    store = NowaitStore(answer=True, error=RuntimeError("boom"))
    _write(store, ["a"])
    assert [key for key, _ in store.single_writes] == ["a"]
    assert store.load_stage_cache("score", "a") == {"result": 0}
    assert len(store.query_events("run-1")) == 1  # the batch's events are not written twice


def test_a_store_without_the_hook_is_written_in_a_worker_thread() -> None:
    store = BlockingStore()
    _write(store, ["a", "b"])
    assert [key for key, _ in store.single_writes] == ["a", "b"]
    assert {thread for _, thread in store.single_writes} != {threading.get_ident()}
