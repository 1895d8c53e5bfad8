"""P2: the P1 run on the SQLite store (WAL, a file in a temp dir, batched commits)."""

from __future__ import annotations

import os
import time

import _common as common


def main() -> None:
    args = common.arguments(__doc__ or "", n=10_000)
    experiment = common.experiment(args.n, runtime=common.runtime_settings(args))
    experiment.compile()
    common.warm_up(sqlite=True)
    with common.temp_dir() as root:
        store = common.sqlite_store(os.path.join(root, "runs.sqlite3"))
        loop_cpu: list[float] = []

        def run() -> object:
            # The event loop's thread alone: the store thread's SQLite calls release the
            # GIL and can run beside it, so this is the part that bounds the wall time.
            start = time.thread_time()
            try:
                return experiment.run(store=store)
            finally:
                loop_cpu.append(time.thread_time() - start)

        try:
            result, wall = common.timed(run)
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
            loop_cpu_s=round(loop_cpu[0], 4),
            **common.check_result(result, args.n),
        )
    )


if __name__ == "__main__":
    main()
