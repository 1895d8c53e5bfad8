"""P4: peak RSS of a run: growth per case in memory, and the whole process on SQLite.

``--variant memory`` reports ``rss_per_case_kb``: the peak RSS during the run call minus the
RSS just before it (dataset built, experiment compiled), per case. ``--variant sqlite``
reports the process's peak RSS over a whole SQLite run, start-up included.
"""

from __future__ import annotations

import gc
import os

import _common as common


def main() -> None:
    args = common.arguments(__doc__ or "", n=100_000, variant="memory")
    start_rss = common.current_rss_mb()
    experiment = common.experiment(args.n, runtime=common.runtime_settings(args))
    experiment.compile()
    common.warm_up(sqlite=args.variant == "sqlite")
    gc.collect()
    before = common.current_rss_mb()
    reset = common.reset_peak_rss()
    if args.variant == "sqlite":
        with common.temp_dir() as root:
            store = common.sqlite_store(os.path.join(root, "runs.sqlite3"))
            try:
                result, wall = common.timed(lambda: experiment.run(store=store))
                peak = common.peak_rss_mb()
            finally:
                store.close()
    else:
        from themis.core.stores import InMemoryRunStore

        store = InMemoryRunStore()
        result, wall = common.timed(lambda: experiment.run(store=store))
        peak = common.peak_rss_mb()
    growth = max(0.0, peak - before)
    common.emit(
        common.line(
            "P4",
            args.variant,
            n=args.n,
            wall_s=wall,
            concurrency=experiment.runtime.max_concurrent_tasks,
            peak_rss=peak,
            rss_per_case_kb=round(growth * 1024 / args.n, 3),
            rss_before_run_mb=round(before, 1),
            rss_at_start_mb=round(start_rss, 1),
            peak_reset=reset,
            **common.check_result(result, args.n),
        )
    )


if __name__ == "__main__":
    main()
