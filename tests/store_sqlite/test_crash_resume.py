"""A real run killed at random moments resumes to a complete, duplicate-free log."""

from __future__ import annotations

import importlib.util
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from themis.core.events import RunEvent
from themis_store_sqlite import SqliteRunStore

Script = Callable[..., list[str]]
SCRIPTS = Path(__file__).parent / "scripts"
# Events per case: two generations, a reduction, a parse and two scores.
EVENTS_PER_CASE = 6


def _run_id(path: Path, cases: int) -> str:
    """Compile the script's experiment here: the same definition gives the same run_id."""
    spec = importlib.util.spec_from_file_location("_crash_run", SCRIPTS / "crash_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run_id: str = module.experiment(str(path), cases).compile().run_id
    return run_id


def _stored_seq(path: Path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute("SELECT MAX(seq) FROM events").fetchone()
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    finally:
        conn.close()
    return int(row[0] or 0)


def _interrupt_at(
    command: list[str], env: dict[str, str], log: Path, db: Path, seq: int, sig: int
) -> int:
    """Start the run, send ``sig`` once ``seq`` events are stored; return the exit code."""
    with log.open("a") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None and _stored_seq(db) < seq:
                time.sleep(0.01)
            if proc.poll() is None:
                proc.send_signal(sig)
            # A hang guard, not a speed requirement: the run must stop on its own.
            return proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _finish(command: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=600)
    assert done.returncode == 0, log.read_text()[-3000:]
    assert '"status": "completed"' in log.read_text()


def _assert_complete_log(db: Path, run_id: str, cases: int) -> list[RunEvent]:
    store = SqliteRunStore(db)
    try:
        events = store.query_events(run_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq is not dense"
        generations = Counter(
            (e.case_key, e.candidate_id)  # type: ignore[attr-defined]
            for e in events
            if e.event_type == "generation_completed"
        )
        assert len(generations) == cases * 2
        assert set(generations.values()) == {1}, "a candidate was generated twice"
        scores = Counter(
            (e.case_key, e.metric_id)  # type: ignore[attr-defined]
            for e in events
            if e.event_type == "score_completed"
        )
        assert len(scores) == cases * 2
        assert set(scores.values()) == {1}, "a metric was scored twice"
        result = store.get_projection(run_id, "run_result")
        assert result["status"] == "completed"
        assert result["progress"]["completed_cases"] == cases
    finally:
        store.close()
    return events


@pytest.fixture(params=[False, True], ids=["in-process", "writer-process"])
def run_env(request: pytest.FixtureRequest, script_env: dict[str, str]) -> dict[str, str]:
    """The script's environment: the store writing in process, or through its writer
    process (``SqliteRunStore(writer_process=True)``, ready before the run starts)."""
    if request.param:
        return {**script_env, "THEMIS_TEST_WRITER_PROCESS": "1"}
    return script_env


def _writer_processes(db: Path) -> list[int]:
    """The pids of writer processes still running on ``db``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"themis_store_sqlite._writer_process" in cmdline and str(db).encode() in cmdline:
            found.append(int(entry.name))
    return found


def _assert_no_writer_left(db: Path) -> None:
    """A writer process whose parent was killed ends on its own (its pipe closes)."""
    deadline = time.monotonic() + 30  # a hang guard, not a speed requirement
    while _writer_processes(db) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _writer_processes(db), "a writer process outlived its parent"


def test_sigkill_at_random_moments_then_resume_completes_exactly_once(
    tmp_path: Path, script: Script, run_env: dict[str, str]
) -> None:
    script_env = run_env
    cases, kills = 3000, 4
    db, log = tmp_path / "runs.sqlite3", tmp_path / "run.log"
    command = script("crash_run.py", db, cases)
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    share = cases * EVENTS_PER_CASE // (kills + 1)
    # Each attempt is killed once it has stored a random number of new events, so every
    # attempt started (and logged run_started) and the kills spread over the whole run.
    gaps = [rng.randrange(10, share) for _ in range(kills)]
    print(f"seed={seed} kill after new events={gaps}")
    for gap in gaps:
        point = _stored_seq(db) + gap
        code = _interrupt_at(command, script_env, log, db, point, signal.SIGKILL)
        assert code == -signal.SIGKILL, (
            f"seed={seed}: the run ended ({code}) before its kill:\n{log.read_text()[-3000:]}"
        )
        _assert_no_writer_left(db)
    _finish(command, script_env, log)
    events = _assert_complete_log(db, _run_id(db, cases), cases)
    started = [e for e in events if e.event_type == "run_started"]
    assert [e.mode for e in started] == ["fresh"] + ["resume"] * kills  # type: ignore[attr-defined]


def test_sigint_stops_the_run_cleanly_and_resume_completes(
    tmp_path: Path, script: Script, run_env: dict[str, str]
) -> None:
    script_env = run_env
    cases = 2000
    db, log = tmp_path / "runs.sqlite3", tmp_path / "run.log"
    command = script("crash_run.py", db, cases)
    point = random.randrange(cases, cases * EVENTS_PER_CASE // 2)
    code = _interrupt_at(command, script_env, log, db, point, signal.SIGINT)
    assert code != 0, "the run finished before it was interrupted"
    assert "KeyboardInterrupt" in log.read_text() or code == -signal.SIGINT, log.read_text()[-3000:]
    run_id = _run_id(db, cases)
    store = SqliteRunStore(db)
    try:
        failed = store.query_events(run_id, event_types=["run_failed"])
        assert [e.cancelled for e in failed] == [True]  # type: ignore[attr-defined]
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM run_locks").fetchone()[0] == 0
    finally:
        store.close()
    _assert_no_writer_left(db)
    _finish(command, script_env, log)
    _assert_complete_log(db, run_id, cases)
