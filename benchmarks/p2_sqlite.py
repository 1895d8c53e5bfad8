"""P2: the P1 run on the SQLite store (WAL, a file in a temp dir, batched commits)."""

from __future__ import annotations

import os

import _common as common


def main() -> None:
    args = common.arguments(__doc__ or "", n=10_000)
    experiment = common.experiment(args.n, runtime=common.runtime_settings(args))
    experiment.compile()
    common.warm_up(sqlite=True)
    with common.temp_dir() as root:
        store = common.sqlite_store(os.path.join(root, "runs.sqlite3"))
        try:
            result, wall = common.timed(lambda: experiment.run(store=store))
        finally:
            store.close()
        size = os.path.getsize(os.path.join(root, "runs.sqlite3"))
    common.emit(
        common.line(
            "P2",
            "sqlite",
            n=args.n,
            wall_s=wall,
            concurrency=experiment.runtime.max_concurrent_tasks,
            db_mb=round(size / 2**20, 1),
            **common.check_result(result, args.n),
        )
    )


if __name__ == "__main__":
    main()
