"""P5: run a finished N-case SQLite run again (policy auto: nothing to do), in a new process.

The first phase builds the finished run (not timed); a second process, as a user's next
invocation would be, opens the file and times the run call.
"""

from __future__ import annotations

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
            **common.check_result(result, n),
        )
    )


def main() -> None:
    args = common.arguments(__doc__ or "", n=100_000)
    settings = common.runtime_settings(args)
    if args.phase == "resume":
        resume(args.path, args.n, settings)
        return
    with common.temp_dir() as root:
        path = os.path.join(root, "runs.sqlite3")
        build(path, args.n, settings)
        command = [sys.executable, __file__, "--phase", "resume", "--path", path]
        command += ["--n", str(args.n)]
        for pair in args.set:
            command += ["--set", pair]
        if args.concurrency is not None:
            command += ["--concurrency", str(args.concurrency)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"P5 resume phase failed with exit code {done.returncode}")
        for text in done.stdout.splitlines():
            if text.startswith("{"):
                record = json.loads(text)
                if record.get("scenario") == "P5":
                    common.emit(record)


if __name__ == "__main__":
    main()
