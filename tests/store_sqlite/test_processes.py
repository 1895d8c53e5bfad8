"""Several processes on one file: readers during a write, and one writer per run."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from themis.core.errors import StoreConflictError, StoreError
from themis.core.events import RunStartedEvent
from themis_store_sqlite import SqliteRunStore

OpenStore = Callable[..., SqliteRunStore]
Script = Callable[..., list[str]]
BATCH = 256


class Writer:
    """A writer process (scripts/writer.py) driven line by line over its pipes."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        first = self.expect("acquired")
        self.pid = int(first.split()[1])

    def expect(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"writer ended before {prefix!r}: {stderr}")
            if line.startswith(prefix):
                return line.strip()

    def step(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.expect("released")
        assert self.proc.wait(timeout=60) == 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)


@pytest.fixture
def writers(script_env: dict[str, str]) -> Iterator[Callable[..., Writer]]:
    started: list[Writer] = []

    def start(command: list[str]) -> Writer:
        writer = Writer(command, script_env)
        started.append(writer)
        return writer

    yield start
    for writer in started:
        if writer.proc.poll() is None:
            writer.kill()


def test_another_process_reads_each_committed_batch_and_never_half_of_one(
    db_path: Path, open_store: OpenStore, script: Script, writers: Callable[..., Writer]
) -> None:
    db_path.parent.mkdir(parents=True)
    batches, stepped = 40, 3
    # One gated batch more than the checks below: the writer must not run ahead of the
    # last check (it did, now and then, when the free run started right after it).
    writer = writers(script("writer.py", db_path, "r", batches, BATCH, stepped + 1, 0))
    reader = open_store()
    for committed in range(1, stepped + 1):
        writer.step()
        writer.expect(f"committed {committed}")
        assert [e.seq for e in reader.query_events("r")] == list(range(1, committed * BATCH + 1))
    writer.step()
    # From here the writer runs freely; every read sees whole batches, dense from seq 1.
    seen = stepped * BATCH
    while seen < batches * BATCH:
        fresh = reader.query_events("r", after_seq=seen)
        assert len(fresh) % BATCH == 0
        assert [e.seq for e in fresh] == list(range(seen + 1, seen + len(fresh) + 1))
        seen += len(fresh)
    writer.finish()


def test_a_second_process_cannot_take_a_run_that_is_being_written(
    db_path: Path, open_store: OpenStore, script: Script, writers: Callable[..., Writer]
) -> None:
    db_path.parent.mkdir(parents=True)
    writer = writers(script("writer.py", db_path, "r", 1, 10, 0, 1))
    writer.expect("committed 1")
    other = open_store()
    with pytest.raises(StoreConflictError) as info:
        other.acquire_run("r")
    message = str(info.value)
    assert f"pid {writer.pid}" in message
    assert str(db_path) in message
    assert "DELETE FROM run_locks" in message
    with pytest.raises(StoreConflictError):  # writing without the lease is refused too
        other.append_events("r", [RunStartedEvent(run_id="r", seq=11)])
    assert [e.seq for e in other.query_events("r")] == list(range(1, 11))
    writer.finish()
    other.acquire_run("r")  # released on exit: free again
    other.release_run("r")


def test_a_second_store_in_the_same_process_cannot_take_a_held_run(
    open_store: OpenStore,
) -> None:
    first, second = open_store(), open_store()
    first.acquire_run("r")
    with pytest.raises(StoreConflictError, match="another store"):
        second.acquire_run("r")
    first.release_run("r")
    second.acquire_run("r")
    second.release_run("r")


def test_acquiring_a_run_twice_from_one_store_is_refused(open_store: OpenStore) -> None:
    store = open_store()
    store.acquire_run("r")
    with pytest.raises(StoreError, match="release_run"):
        store.acquire_run("r")
    store.release_run("r")
    store.release_run("r")  # idempotent


def test_different_runs_are_written_side_by_side(
    db_path: Path, open_store: OpenStore, script: Script, writers: Callable[..., Writer]
) -> None:
    db_path.parent.mkdir(parents=True)
    busy = writers(script("writer.py", db_path, "busy", 1, 10, 0, 1))
    busy.expect("committed 1")
    mine = open_store()
    mine.acquire_run("mine")
    mine.append_events("mine", [RunStartedEvent(run_id="mine", seq=1)])
    mine.release_run("mine")
    assert [e.seq for e in mine.query_events("mine")] == [1]
    busy.finish()
    assert len(mine.query_events("busy")) == 10


def test_the_lease_of_a_killed_process_is_taken_over(
    db_path: Path, open_store: OpenStore, script: Script, writers: Callable[..., Writer]
) -> None:
    db_path.parent.mkdir(parents=True)
    writer = writers(script("writer.py", db_path, "r", 1, 10, 0, 1))
    writer.expect("committed 1")
    writer.kill(signal.SIGKILL)
    survivor = open_store()
    with capture_logs() as logs:
        survivor.acquire_run("r")
    assert any(
        entry["event"] == "store.lease_taken_over" and entry["previous_pid"] == writer.pid
        for entry in logs
    )
    survivor.append_events("r", [RunStartedEvent(run_id="r", seq=11, mode="resume")])
    assert [e.seq for e in survivor.query_events("r")] == list(range(1, 12))


def test_closing_a_store_gives_its_leases_back(open_store: OpenStore) -> None:
    holder, other = open_store(), open_store()
    holder.acquire_run("a")
    holder.acquire_run("b")
    holder.close()
    other.acquire_run("a")
    other.acquire_run("b")
