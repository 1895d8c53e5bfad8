"""Run leases: one row per executing run, so two processes never write the same run."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass

from themis.core.errors import StoreConflictError, StoreError
from themis.core.logs import get_logger

from themis_store_sqlite._errors import store_error

__all__ = ["LeaseHolder", "LeaseOwner", "check_append_allowed", "take_lease"]

log = get_logger(__name__)


def _proc_start_token(pid: int) -> str | None:
    """Boot id plus process start time: tells a live pid from a reused one (Linux only)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields after it are fixed.
    fields = stat[stat.rfind(")") + 2 :].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].startswith("Z")


@dataclass(frozen=True)
class LeaseOwner:
    """Who holds a lease: a per-store uuid plus the process and host it runs in."""

    owner: str
    pid: int
    host: str
    pid_start: str | None

    @classmethod
    def current(cls) -> LeaseOwner:
        pid = os.getpid()
        return cls(uuid.uuid4().hex, pid, socket.gethostname(), _proc_start_token(pid))


@dataclass(frozen=True)
class LeaseHolder:
    """A lease row as stored."""

    owner: str
    pid: int
    host: str
    pid_start: str | None
    acquired_at: float
    heartbeat: float

    def is_stale(self) -> bool:
        """True when the holder's process is known to be gone (same host only)."""
        if self.host != socket.gethostname():
            # WAL needs shared memory, so every writer of the file is on this host; a lease
            # from another host is never taken over silently.
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, owned by another user
        if _is_zombie(self.pid):
            return True
        current = _proc_start_token(self.pid)
        return self.pid_start is not None and current is not None and current != self.pid_start

    def describe(self) -> str:
        age = max(0.0, time.time() - self.heartbeat)
        return (
            f"pid {self.pid} on host {self.host} (lease {self.owner[:8]}, "
            f"last heartbeat {age:.0f} s ago)"
        )


def _read(conn: sqlite3.Connection, run_id: str) -> LeaseHolder | None:
    row = conn.execute(
        "SELECT owner, pid, host, pid_start, acquired_at, heartbeat FROM run_locks "
        "WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return None if row is None else LeaseHolder(*row)


def _busy_error(path: str, operation: str, run_id: str, holder: LeaseHolder) -> StoreError:
    return store_error(
        path,
        operation,
        f"run {run_id} is being executed by another store: {holder.describe()}",
        "wait for that run to finish (resuming it afterwards continues where it stopped); "
        "if that process is gone for good, delete its lease with "
        f"`sqlite3 {path} \"DELETE FROM run_locks WHERE run_id='{run_id}'\"`",
        cls=StoreConflictError,
    )


def take_lease(
    conn: sqlite3.Connection, path: str, run_id: str, me: LeaseOwner
) -> LeaseHolder | None:
    """Insert this owner's lease inside an open write transaction; return a replaced stale one."""
    holder = _read(conn, run_id)
    if holder is not None:
        if holder.owner == me.owner:
            raise store_error(
                path,
                "acquire_run",
                f"this store already holds the lease of run {run_id}",
                "call release_run(run_id) when a run ends before acquiring it again",
            )
        if not holder.is_stale():
            raise _busy_error(path, "acquire_run", run_id, holder)
        log.warning(
            "store.lease_taken_over",
            path=path,
            run_id=run_id,
            previous_pid=holder.pid,
            previous_host=holder.host,
        )
    now = time.time()
    conn.execute(
        "INSERT OR REPLACE INTO run_locks "
        "(run_id, owner, pid, host, pid_start, acquired_at, heartbeat) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (run_id, me.owner, me.pid, me.host, me.pid_start, now, now),
    )
    return holder


def check_append_allowed(
    conn: sqlite3.Connection, path: str, run_id: str, me: LeaseOwner, held: bool
) -> None:
    """Inside an append transaction: refuse when another live store holds the run's lease."""
    if held:
        cursor = conn.execute(
            "UPDATE run_locks SET heartbeat = ? WHERE run_id = ? AND owner = ?",
            (time.time(), run_id, me.owner),
        )
        if cursor.rowcount == 1:
            return
    holder = _read(conn, run_id)
    if holder is None or holder.owner == me.owner:
        return
    if holder.is_stale():
        conn.execute("DELETE FROM run_locks WHERE run_id = ? AND owner = ?", (run_id, holder.owner))
        log.warning("store.stale_lease_removed", path=path, run_id=run_id, previous_pid=holder.pid)
        return
    raise _busy_error(path, "append_events", run_id, holder)
