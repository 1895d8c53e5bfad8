"""P7: rejudge N stored cases on SQLite with an instant judge (builtin/llm_rubric judged by
builtin/demo_judge); the generator must not be called.

``--db PATH`` keeps the set-up run in PATH (built on the first call, from the same ``--n``
and settings) and rejudges a copy of it, so later calls time or profile the rejudge alone:
``py-spy record -- python benchmarks/p7_rejudge.py --db /tmp/p7.sqlite3``. A file written
by an older schema version is built again: it would hold no fold state (schema version
3), and its first rejudge would fold the whole log, which a set-up run never leaves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
from typing import Any

import _common as common


def main() -> None:
    db = common.db_option()
    args = common.arguments(__doc__ or "", n=10_000)
    settings = common.runtime_settings(args)
    generator = common.SumGenerator()
    experiment = common.experiment(args.n, generator=generator, runtime=settings, judged=True)
    experiment.compile()
    common.warm_up(sqlite=True, judged=True)
    with common.temp_dir() as root:
        path = os.path.join(root, "runs.sqlite3")
        if db is None:
            _set_up(experiment, path, args.n)
        else:
            if os.path.exists(db) and _schema_version(db) < _current_schema_version():
                print(f"P7: {db} has an older schema; building it again", file=sys.stderr)
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(db + suffix):
                        os.remove(db + suffix)
            if not os.path.exists(db):
                _set_up(experiment, db, args.n)
            # The rejudge appends to its store: work on a copy, keep the built run as it is.
            for suffix in ("", "-wal"):
                if os.path.exists(db + suffix):
                    shutil.copyfile(db + suffix, path + suffix)
        calls_before = generator.calls
        store = common.sqlite_store(path)
        try:
            result, wall = common.timed(lambda: experiment.rejudge(store=store))
        finally:
            store.close()
    generator_calls = generator.calls - calls_before
    check = common.check_result(result, args.n)
    check["ok"] = check["ok"] and generator_calls == 0
    common.emit(
        common.line(
            "P7",
            "sqlite",
            n=args.n,
            wall_s=wall,
            concurrency=experiment.runtime.max_concurrent_tasks,
            generator_calls=generator_calls,
            **check,
        )
    )


def _schema_version(path: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _current_schema_version() -> int:
    from themis_store_sqlite._schema import SCHEMA_VERSION

    return SCHEMA_VERSION


def _set_up(experiment: Any, path: str, n: int) -> None:
    """Run the experiment into a SQLite file at ``path`` (not timed)."""
    store = common.sqlite_store(path)
    try:
        first = experiment.run(store=store)
    finally:
        store.close()
    if first.progress.completed_cases != n:
        raise SystemExit(f"P7 setup completed {first.progress.completed_cases} of {n}")


if __name__ == "__main__":
    main()
