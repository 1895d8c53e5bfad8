"""P3: N cases whose generator sleeps 50 ms, at a given concurrency; efficiency = ideal/actual."""

from __future__ import annotations

import _common as common


def main() -> None:
    args = common.arguments(__doc__ or "", n=2_000, concurrency=64)
    concurrency = args.concurrency
    generator = common.SumGenerator(delay=common.SLEEP_S)
    experiment = common.experiment(
        args.n, generator=generator, runtime=common.runtime_settings(args)
    )
    experiment.compile()
    common.warm_up()
    from themis.core.stores import InMemoryRunStore

    store = InMemoryRunStore()
    result, wall = common.timed(lambda: experiment.run(store=store))
    # The waves of sleeps alone: ceil would be exact for N a multiple of the concurrency.
    ideal = args.n / concurrency * common.SLEEP_S
    common.emit(
        common.line(
            "P3",
            "memory",
            n=args.n,
            wall_s=wall,
            concurrency=concurrency,
            efficiency=ideal / wall,
            ideal_s=round(ideal, 4),
            generator_calls=generator.calls,
            **common.check_result(result, args.n),
        )
    )


if __name__ == "__main__":
    main()
