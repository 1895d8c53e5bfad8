"""Take a run's lease and append numbered batches; report each commit on stdout.

Usage: writer.py PATH RUN_ID BATCHES BATCH_SIZE STEPPED HOLD
STEPPED batches wait for a line on stdin before being written; HOLD=1 keeps the lease (and
the process) alive after the last batch until stdin closes.
"""

from __future__ import annotations

import os
import sys

from themis.core.events import GenerationCompletedEvent
from themis_store_sqlite import SqliteRunStore


def main(path: str, run_id: str, batches: int, size: int, stepped: int, hold: bool) -> None:
    store = SqliteRunStore(path, busy_timeout_s=30.0)
    store.acquire_run(run_id)
    print(f"acquired {os.getpid()}", flush=True)
    for batch in range(batches):
        if batch < stepped:
            sys.stdin.readline()
        store.append_events(
            run_id,
            [
                GenerationCompletedEvent(
                    run_id=run_id,
                    seq=batch * size + i + 1,
                    case_id=f"case-{batch}-{i}",
                    candidate_id=f"case-{batch}-{i}-candidate-0",
                )
                for i in range(size)
            ],
        )
        print(f"committed {batch + 1}", flush=True)
    if hold:
        sys.stdin.read()
    store.release_run(run_id)
    store.close()
    print("released", flush=True)


if __name__ == "__main__":
    path, run_id, batches, size, stepped, hold = sys.argv[1:7]
    main(path, run_id, int(batches), int(size), int(stepped), hold == "1")
