"""P1: framework overhead, N cases with an instant generator and exact match, memory store."""

from __future__ import annotations

import _common as common


def main() -> None:
    args = common.arguments(__doc__ or "", n=10_000)
    experiment = common.experiment(args.n, runtime=common.runtime_settings(args))
    experiment.compile()  # not timed: the scenario measures the run call only
    common.warm_up()
    from themis.core.stores import InMemoryRunStore

    store = InMemoryRunStore()
    result, wall = common.timed(lambda: experiment.run(store=store))
    common.emit(
        common.line(
            "P1",
            "memory",
            n=args.n,
            wall_s=wall,
            concurrency=experiment.runtime.max_concurrent_tasks,
            **common.check_result(result, args.n),
        )
    )


if __name__ == "__main__":
    main()
