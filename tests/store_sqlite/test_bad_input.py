"""Bad paths and damaged or full disks give store errors that name the file and the fix."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from themis.core.errors import StoreError, ThemisError, TransientStoreError
from themis.core.events import GenerationCompletedEvent, RunEvent, RunStartedEvent
from themis_store_sqlite import SqliteRunStore

OpenStore = Callable[..., SqliteRunStore]
Script = Callable[..., list[str]]

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3


def _events(first: int, count: int) -> list[RunEvent]:
    return [
        GenerationCompletedEvent(run_id="r", seq=seq, case_id=f"case-{seq}", candidate_id="c" * 100)
        for seq in range(first, first + count)
    ]


def test_a_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        SqliteRunStore(tmp_path).initialize()
    assert str(tmp_path) in str(info.value)
    assert "directory" in str(info.value)


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are my notes, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        SqliteRunStore(path).initialize()
    assert str(path) in str(info.value)
    assert "not a SQLite database" in str(info.value)
    assert "Fix:" in str(info.value)
    assert path.read_bytes() == content


def test_a_corrupt_database_gives_a_store_error_with_the_recovery_command(
    store: SqliteRunStore, db_path: Path, open_store: OpenStore
) -> None:
    store.append_events("r", _events(1, 2000))
    store.close()  # the last connection checkpoints the WAL into the main file
    size = db_path.stat().st_size
    with db_path.open("r+b") as handle:
        for offset in range(4096 * 2, size, 4096 * 3):
            handle.seek(offset)
            handle.write(b"\xde\xad\xbe\xef" * 256)
    damaged = open_store()
    with pytest.raises(StoreError) as info:
        damaged.query_events("r")
    message = str(info.value)
    assert "corrupt" in message
    assert f"sqlite3 {db_path} .recover" in message


def test_full_disk_under_a_file_size_limit_keeps_every_committed_batch(
    db_path: Path, script: Script, script_env: dict[str, str], open_store: OpenStore
) -> None:
    db_path.parent.mkdir(parents=True)
    done = subprocess.run(
        script("fill_disk.py", db_path, 2_000_000),
        capture_output=True,
        text=True,
        env=script_env,
        timeout=120,
        check=True,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["error_type"] == "StoreError", outcome
    assert str(db_path) in outcome["message"]
    assert "ulimit -f" in outcome["message"]
    assert outcome["committed"] > 0
    reopened = open_store()
    assert [e.seq for e in reopened.query_events("r")] == list(range(1, outcome["committed"] + 1))
    reopened.append_events("r", _events(outcome["committed"] + 1, 100))  # room again: resumes
    assert len(reopened.query_events("r")) == outcome["committed"] + 100


def test_database_size_limit_reached_mid_run_rolls_back_only_that_batch(
    store: SqliteRunStore,
) -> None:
    store.append_events("r", _events(1, 50))
    assert store._writer is not None
    pages = store._writer.execute("PRAGMA page_count").fetchone()[0]
    store._writer.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(StoreError) as info:
        store.append_events("r", _events(51, 2000))
    assert "full" in str(info.value)
    assert "resume" in str(info.value)
    assert [e.seq for e in store.query_events("r")] == list(range(1, 51))
    store._writer.execute("PRAGMA max_page_count = 1073741823")
    store.append_events("r", _events(51, 2000))
    assert len(store.query_events("r")) == 2050


def test_a_locked_database_gives_a_transient_error_then_works(
    store: SqliteRunStore, db_path: Path
) -> None:
    quick = SqliteRunStore(db_path, busy_timeout_s=0.05)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(TransientStoreError) as info:
            quick.append_events("r", [RunStartedEvent(run_id="r", seq=1)])
        assert str(db_path) in str(info.value)
        assert "busy_timeout_s" in str(info.value)
        other.execute("ROLLBACK")
        quick.append_events("r", [RunStartedEvent(run_id="r", seq=1)])
        assert [e.seq for e in store.query_events("r")] == [1]
    finally:
        other.close()
        quick.close()


def test_store_errors_are_themis_errors() -> None:
    assert issubclass(StoreError, ThemisError)
    assert issubclass(TransientStoreError, StoreError)


# -- read-only locations: run in a child that really lacks write permission ------------------


def _drop_permission_override() -> None:
    """In the child: as root, give up the capabilities that bypass file permissions."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory a less privileged child can reach (pytest's tmp dirs are private)."""
    path = Path(tempfile.mkdtemp(prefix="themis-ro-"))
    path.chmod(0o755)
    probe = path / "probe"
    probe.mkdir(mode=0o555)
    try:
        done = subprocess.run(
            [sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"],
            capture_output=True,
            preexec_fn=_drop_permission_override,
            timeout=60,
        )
        enforced = done.returncode != 0
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["wrote"]
    except subprocess.SubprocessError as exc:
        enforced, reason = False, [str(exc)]
    probe.chmod(0o755)
    if not enforced:
        shutil.rmtree(path)
        pytest.skip(
            "file permissions cannot be enforced on a child process here (running as root "
            f"without the right to drop CAP_DAC_OVERRIDE: {reason[0]})"
        )
    yield path
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(path)


def _try(script: Script, env: dict[str, str], path: Path, action: str) -> dict[str, object]:
    done = subprocess.run(
        script("try_store.py", path, action),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        preexec_fn=_drop_permission_override,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_new_store_in_a_read_only_directory_is_refused(
    shared_dir: Path, script: Script, script_env: dict[str, str]
) -> None:
    locked = shared_dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    path = locked / "runs.sqlite3"
    outcome = _try(script, script_env, path, "initialize")
    assert outcome["ok"] is False
    assert outcome["error_type"] == "StoreError"
    assert str(path) in str(outcome["message"])
    assert "writable" in str(outcome["message"])


def test_writing_to_a_read_only_store_is_refused_and_keeps_its_data(
    shared_dir: Path, script: Script, script_env: dict[str, str]
) -> None:
    folder = shared_dir / "store"
    folder.mkdir()
    path = folder / "runs.sqlite3"
    writer = SqliteRunStore(path)
    writer.append_events("r", [RunStartedEvent(run_id="r", seq=1)])
    writer.close()
    path.chmod(0o444)
    folder.chmod(0o555)
    outcome = _try(script, script_env, path, "append")
    assert outcome["ok"] is False
    assert outcome["error_type"] == "StoreError"
    assert str(path) in str(outcome["message"])
    assert "writable" in str(outcome["message"])
    folder.chmod(0o755)
    path.chmod(0o644)
    reader = SqliteRunStore(path)
    try:
        assert [e.seq for e in reader.query_events("r")] == [1]
    finally:
        reader.close()
