"""P7: rejudge N stored cases on SQLite with an instant judge (builtin/llm_rubric judged by
builtin/demo_judge); the generator must not be called.

``--db PATH`` keeps the set-up run in PATH (built on the first call, from the same ``--n``
and settings) and rejudges a copy of it, so later calls time or profile the rejudge alone:
``py-spy record -- python benchmarks/p7_rejudge.py --db /tmp/p7.sqlite3``.
"""

from __future__ import annotations

import os
import shutil
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
