"""Checkpoints of a store's WAL in a thread of their own, beside the run's writer.

A checkpoint copies the pages a run's commits appended to the WAL back into the database
file and lets the next commit write the WAL from its start again. Left to the writer
connection (``wal_autocheckpoint``), it runs inside one of the run's commits: at 100,000
cases a dozen of them each copied about 40 MB, fsyncs included, for 130-200 ms, while the
store's thread, and with it the run, waited. Here a thread with its own connection runs a
``PASSIVE`` checkpoint after the writer's commits, at most every ``interval`` seconds: it
never waits for the writer or a reader and never holds the writer up, and SQLite releases
the GIL for the copy, so it runs on a core the run is not using.

The writer keeps its ``wal_autocheckpoint``: should this thread fall behind or fail, the WAL
still grows no further than it did without it. A checkpoint changes no data, so the
``PRAGMA data_version`` other connections compare does not move for it.
"""

from __future__ import annotations

import sqlite3
import threading

from themis.core.logs import get_logger

__all__ = ["Checkpointer"]

log = get_logger(__name__)

# At most this often: the pages a run's random stage-cache keys land on are rewritten by
# commit after commit, and each checkpoint copies a page once however often it changed.
CHECKPOINT_INTERVAL_S = 0.25
# Checkpoints run back to back while commits made during one leave frames behind it: the
# next commit writes the WAL from its start only once every frame is in the database.
CATCH_UP_TRIES = 4
# A thread with nothing to checkpoint for this long closes its connection and ends; the
# next commit starts another.
IDLE_EXIT_S = 5.0


class Checkpointer:
    """The WAL checkpoints of one database file, run by a thread that the writer nudges."""

    def __init__(
        self,
        path: str,
        *,
        interval_s: float = CHECKPOINT_INTERVAL_S,
        idle_exit_s: float = IDLE_EXIT_S,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self.idle_exit_s = idle_exit_s
        # Checkpoints run (each PRAGMA counts), and whether one failed and ended the thread.
        self.checkpoints = 0
        self.failed = False
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def nudge(self) -> None:
        """Called after a commit: a checkpoint is due (the thread is started if need be)."""
        if self.failed:
            return
        with self._lock:
            self._due.set()
            thread = self._thread
            if thread is None or not thread.is_alive():
                if self._stop.is_set():
                    return
                thread = threading.Thread(
                    target=self._run, name=f"themis-checkpoint {self.path}", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError as exc:  # no thread to be had: the writer checkpoints
                    self.failed = True
                    log.warning("store.checkpoint_failed", path=self.path, error=str(exc))
                    return
                self._thread = thread

    def close(self) -> None:
        """Stop the thread and close its connection; waits for a checkpoint under way.

        The next ``nudge`` starts a thread again."""
        with self._lock:
            self._stop.set()
            self._due.set()
            thread = self._thread
            self._thread = None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        # A store used again after ``close`` opens its connections again, and checkpoints.
        self._stop.clear()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                if not self._due.wait(self.idle_exit_s):
                    with self._lock:
                        if not self._due.is_set():
                            if self._thread is threading.current_thread():
                                self._thread = None
                            return
                if self._stop.is_set():
                    return
                self._due.clear()
                if conn is None:
                    conn = sqlite3.connect(
                        self.path, timeout=0, isolation_level=None, check_same_thread=False
                    )
                    # As the writer: fsync the WAL before a checkpoint and the database after.
                    conn.execute("PRAGMA synchronous=NORMAL")
                for _ in range(CATCH_UP_TRIES):
                    _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                    if copied >= frames:
                        break
                if self._stop.wait(self.interval_s):
                    return
        except sqlite3.Error as exc:
            # Only a way to keep commits short: the writer's own autocheckpoint takes over.
            self.failed = True
            log.warning("store.checkpoint_failed", path=self.path, error=str(exc))
        finally:
            if conn is not None:
                conn.close()
