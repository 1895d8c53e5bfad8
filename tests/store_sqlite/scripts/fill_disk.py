"""Append batches under a file-size limit (``ulimit -f``) until the disk is "full"."""

from __future__ import annotations

import json
import resource
import signal
import sys

from themis.core.events import GenerationCompletedEvent
from themis_store_sqlite import SqliteRunStore

BATCH = 100


def main(path: str, limit_bytes: int) -> None:
    # Without this the kernel kills the process (SIGXFSZ) instead of failing the write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    store = SqliteRunStore(path)
    committed = 0
    outcome: dict[str, object] = {}
    try:
        while committed < 1_000_000:
            store.append_events(
                "r",
                [
                    GenerationCompletedEvent(
                        run_id="r",
                        seq=committed + i + 1,
                        case_id=f"case-{committed + i}",
                        candidate_id="x" * 200,
                    )
                    for i in range(BATCH)
                ],
            )
            committed += BATCH
    except Exception as exc:
        outcome = {"error_type": type(exc).__name__, "message": str(exc)}
    try:
        store.close()
    except Exception as exc:
        outcome["close_error"] = str(exc)
    print(json.dumps({"committed": committed, **outcome}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
