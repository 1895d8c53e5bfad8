"""The writer with a store that keeps batches in flight (``_pipelined_appender``).

Such a store (the SQLite store's writer process) answers an append before the batch is
committed. The writer must:

- show observers only committed events, each once, in order;
- wait for every batch when it settles;
- after a failure, show observers the batches that were committed, and write the others
  again, in order, under the same seqs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import pytest
from themis.core._observers import Observers
from themis.core._writer import EventWriter
from themis.core.errors import StoreError
from themis.core.events import RunStartedEvent
from themis.core.stores import InMemoryRunStore


class _Lost(StoreError):
    """What a pipelined store raises when batches from ``first_seq`` on were not committed."""

    def __init__(self, first_seq: int) -> None:
        super().__init__(f"lost from seq {first_seq}")
        self.first_seq = first_seq


class PipelinedStore(InMemoryRunStore):
    """Commits a batch once ``lag`` later ones are sent (or at the barrier); the
    ``fail_at``-th append commits all but its last ``lag`` batches, loses those and fails."""

    blocking: ClassVar[bool] = True

    def __init__(self, lag: int, fail_at: int | None = None) -> None:
        super().__init__()
        self.lag = lag
        self.fail_at = fail_at
        self.appends = 0
        self.sent: list[tuple[int, int]] = []  # (first seq, last seq), not committed yet
        self.committed: list[int] = []  # every seq committed, in order
        self.sends: list[int] = []  # the first seq of every batch sent

    def _pipelined_appender(self) -> Any:
        return self._append, self._barrier

    def _commit_through(self, keep: int) -> int | None:
        while len(self.sent) > keep:
            first, last = self.sent.pop(0)
            self.committed.extend(range(first, last + 1))
        return self.committed[-1] if self.committed else None

    def _append(self, run_id: str, items: list[Any], first_seq: int) -> int:
        self.appends += 1
        self.sends.append(first_seq)
        self.sent.append((first_seq, first_seq + len(items) - 1))
        if self.appends == self.fail_at:
            # It committed all but the last ``lag`` batches sent (the writer has not heard
            # of the oldest of those commits yet); the last ``lag`` are lost.
            self._commit_through(self.lag)
            first = self.sent[0][0]
            self.sent.clear()
            self.lag = 0  # then it writes as the store does in process
            raise _Lost(first)
        self._commit_through(self.lag)
        # Everything before the first batch still in flight is committed.
        return self.sent[0][0] - 1 if self.sent else first_seq + len(items) - 1

    def _barrier(self) -> int | None:
        return self._commit_through(0)


class Seen:
    def __init__(self, store: PipelinedStore) -> None:
        self.store = store
        self.seqs: list[int] = []
        self.early: list[int] = []

    def on_event(self, event: Any) -> None:
        self.seqs.append(event.seq)
        if event.seq not in self.store.committed:
            self.early.append(event.seq)


def _run(store: PipelinedStore, batches: int, per_batch: int) -> Seen:
    seen = Seen(store)
    writer = EventWriter(
        store,
        "run-1",
        next_seq=0,
        batch_size=256,
        flush_interval=60.0,
        retry_attempts=1,
        retry_delay=0.0,
        observers=Observers([seen], None),
    )

    async def main() -> None:
        for _ in range(batches):
            for _ in range(per_batch):
                writer.emit(RunStartedEvent(run_id="run-1"))
            await writer.flush(settle=False)  # one batch, maybe still in flight
        await writer.flush()  # settles

    anyio.run(main)
    return seen


def test_observers_see_only_committed_events_each_once_in_order() -> None:
    store = PipelinedStore(lag=2)
    seen = _run(store, batches=5, per_batch=3)
    assert store.committed == list(range(1, 16))
    assert seen.seqs == list(range(1, 16))
    assert seen.early == []


@pytest.mark.parametrize("fail_at", [1, 3, 5])
def test_batches_a_failure_left_uncommitted_are_written_again_under_their_seqs(
    fail_at: int,
) -> None:
    store = PipelinedStore(lag=2, fail_at=fail_at)
    seen = _run(store, batches=5, per_batch=3)
    # Dense, each seq once: the lost batches came back in order, numbered as before.
    assert store.committed == list(range(1, 16))
    # The batches committed before the failure were shown, then the others, once each.
    assert seen.seqs == list(range(1, 16))
    assert seen.early == []
    # The failed append was followed by the lost batches, sent again from their first seq.
    lost_from = store.sends[fail_at - min(2, fail_at)]
    assert store.sends[fail_at] == lost_from
