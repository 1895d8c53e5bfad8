"""The WAL's checkpoints run in a thread of their own, on real database files."""

from __future__ import annotations

import functools
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from themis.core.snapshot import RunSnapshot
from themis_store_sqlite import SqliteRunStore, _database
from themis_store_sqlite._checkpointer import Checkpointer

from .conftest import _case_events

OpenStore = Callable[..., SqliteRunStore]


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def _rows_in_file_alone(db_path: Path, tmp_path: Path) -> int:
    """The events the database file holds without its WAL: what checkpoints copied there."""
    copy = tmp_path / "copy" / "file-alone.sqlite3"
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(db_path, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # not even the schema is there yet
        return 0
    finally:
        conn.close()


def test_commits_are_checkpointed_into_the_file_by_the_thread_not_the_writer(
    store: SqliteRunStore, snapshot: RunSnapshot, db_path: Path, tmp_path: Path
) -> None:
    store.persist_snapshot(snapshot)
    events = _case_events(snapshot.run_id, snapshot)
    store.append_events(snapshot.run_id, events)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    # The writer's own autocheckpoint waits for 40 MB of WAL; these few pages are in the
    # database file only because the thread checkpointed them.
    _wait_for(lambda: _rows_in_file_alone(db_path, tmp_path) == len(events), "a checkpoint")
    assert checkpointer.checkpoints >= 1
    assert not checkpointer.failed


def test_a_checkpoint_does_not_turn_the_stage_cache_filter_off(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.acquire_run("r")
    store._key_filter_wanted = True
    store.acquire_run("r-next")  # a write transaction scans the filter
    assert store._key_filter is not None
    checkpointer = store._checkpointer
    assert checkpointer is not None
    done = checkpointer.checkpoints
    store.store_stage_cache("score", "k", {"result": 1})
    store.acquire_run("flush")
    store.release_run("flush")  # commits the buffer, and nudges the thread
    _wait_for(lambda: checkpointer.checkpoints > done, "a checkpoint")
    store.acquire_run("after")  # the next write compares PRAGMA data_version
    assert store._key_filter is not None and not store._key_filter_off


def test_the_thread_ends_when_idle_and_a_commit_starts_another(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = functools.partial(Checkpointer, interval_s=0.01, idle_exit_s=0.05)
    monkeypatch.setattr(_database, "Checkpointer", quick)
    store = open_store()
    store.acquire_run("r")
    checkpointer = store._checkpointer
    assert checkpointer is not None
    _wait_for(lambda: checkpointer.checkpoints >= 1, "a first checkpoint")
    _wait_for(lambda: checkpointer._thread is None, "the idle thread to end")
    store.acquire_run("r2")
    _wait_for(lambda: checkpointer.checkpoints >= 2, "a checkpoint by a new thread")


def test_close_stops_the_thread_and_leaves_no_wal(
    open_store: OpenStore, snapshot: RunSnapshot, db_path: Path
) -> None:
    store = open_store()
    store.persist_snapshot(snapshot)
    store.append_events(snapshot.run_id, _case_events(snapshot.run_id, snapshot))
    checkpointer = store._checkpointer
    assert checkpointer is not None
    thread = checkpointer._thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive() and checkpointer._thread is None
    assert not Path(str(db_path) + "-wal").exists()
    # Used again after close, it checkpoints again.
    store.acquire_run("again")
    assert store._checkpointer is checkpointer
    _wait_for(lambda: checkpointer.checkpoints >= 1, "a checkpoint after close")


def test_a_store_in_memory_has_no_checkpointer(open_store: OpenStore) -> None:
    store = open_store(":memory:")
    store.acquire_run("r")
    assert store._checkpointer is None


def test_a_failing_checkpoint_is_logged_and_leaves_the_writer_to_checkpoint(
    tmp_path: Path,
) -> None:
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("not a database file, only some text " * 100)
    checkpointer = Checkpointer(str(not_a_database))
    with capture_logs() as logs:
        checkpointer.nudge()
        thread = checkpointer._thread
        assert thread is not None
        thread.join(30.0)
    assert not thread.is_alive() and checkpointer.failed
    failures = [log for log in logs if log["event"] == "store.checkpoint_failed"]
    assert len(failures) == 1 and failures[0]["path"] == str(not_a_database)
    assert "not a database" in failures[0]["error"]
    checkpointer.nudge()  # starts nothing: the writer's autocheckpoint has the job
    assert checkpointer._thread is thread
    checkpointer.close()
