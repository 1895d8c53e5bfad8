"""P5: run a finished N-case SQLite run again (policy auto: nothing to do), in a new process.

``wall_s`` is the run call; ``cases_read_s`` the first use of the result's cases after it,
which reads them from the stored text (``CaseList``).

The first phase builds the finished run (not timed); a second process, as a user's next
invocation would be, opens the file and times the run call. ``--db PATH`` keeps the built
run in PATH and reuses it on the next call, for iterating on the resume alone (the file
must come from the same ``--n`` and settings, and a revision that persists the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import _common as common


def build(path: str, n: int, settings: dict[str, object]) -> None:
    experiment = common.experiment(n, runtime=settings)
    store = common.sqlite_store(path)
    try:
        result = experiment.run(store=store)
    finally:
        store.close()
    if result.progress.completed_cases != n:
        raise SystemExit(f"P5 setup: the run completed {result.progress.completed_cases} of {n}")


def resume(path: str, n: int, settings: dict[str, object]) -> None:
    generator = common.SumGenerator()
    experiment = common.experiment(n, generator=generator, runtime=settings)
    experiment.compile()
    common.warm_up(sqlite=True)
    store = common.sqlite_store(path)
    try:
        result, wall = common.timed(lambda: experiment.run(store=store))
        run_cpu = common.last_cpu_s
        # The result's cases are read from the stored text when first used (``CaseList``):
        # the time that takes, on top of the run call, is reported beside it.
        cases, read = common.timed(lambda: list(result.cases))
        common.last_cpu_s = run_cpu  # ``cpu_s`` is the run call's
    finally:
        store.close()
    common.emit(
        common.line(
            "P5",
            "sqlite",
            n=n,
            wall_s=wall,
            concurrency=experiment.runtime.max_concurrent_tasks,
            generator_calls=generator.calls,
            cases_read_s=round(read, 4),
            cases_read=len(cases),
            **common.check_result(result, n),
        )
    )


def _phase(phase: str, path: str, args: argparse.Namespace) -> str:
    """Run one phase in a child process, so neither shares a heap with the other."""
    command = [sys.executable, __file__, "--phase", phase, "--path", path, "--n", str(args.n)]
    for pair in args.set:
        command += ["--set", pair]
    if args.concurrency is not None:
        command += ["--concurrency", str(args.concurrency)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"P5 {phase} phase failed with exit code {done.returncode}")
    return done.stdout


def main() -> None:
    db = common.db_option()
    args = common.arguments(__doc__ or "", n=100_000)
    settings = common.runtime_settings(args)
    if args.phase == "build":
        build(args.path, args.n, settings)
        return
    if args.phase == "resume":
        resume(args.path, args.n, settings)
        return
    # Each phase in its own process: measured, a resume started by a parent still holding
    # the 1 GB heap of the build ran twice as slowly.
    if db is not None:
        # Building 100,000 cases takes a minute or two; iterating on the resume needs it once.
        if not os.path.exists(db):
            _phase("build", db, args)
        _resume(db, args)
        return
    with common.temp_dir() as root:
        path = os.path.join(root, "runs.sqlite3")
        _phase("build", path, args)
        _resume(path, args)


def _resume(path: str, args: argparse.Namespace) -> None:
    for text in _phase("resume", path, args).splitlines():
        if text.startswith("{"):
            record = json.loads(text)
            if record.get("scenario") == "P5":
                common.emit(record)


if __name__ == "__main__":
    main()
