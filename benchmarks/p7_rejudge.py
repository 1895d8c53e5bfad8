"""P7: rejudge N stored cases on SQLite with an instant judge (builtin/llm_rubric judged by
builtin/demo_judge); the generator must not be called."""

from __future__ import annotations

import os

import _common as common


def main() -> None:
    args = common.arguments(__doc__ or "", n=10_000)
    settings = common.runtime_settings(args)
    generator = common.SumGenerator()
    experiment = common.experiment(args.n, generator=generator, runtime=settings, judged=True)
    experiment.compile()
    common.warm_up(sqlite=True, judged=True)
    with common.temp_dir() as root:
        path = os.path.join(root, "runs.sqlite3")
        store = common.sqlite_store(path)
        try:
            first = experiment.run(store=store)  # setup, not timed
        finally:
            store.close()
        if first.progress.completed_cases != args.n:
            raise SystemExit(f"P7 setup completed {first.progress.completed_cases} of {args.n}")
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


if __name__ == "__main__":
    main()
