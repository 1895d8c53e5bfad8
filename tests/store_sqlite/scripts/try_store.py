"""Open a store in this process, do one thing, print the outcome as one JSON line."""

from __future__ import annotations

import json
import sys

import structlog
from themis.core.events import RunStartedEvent
from themis_store_sqlite import SqliteRunStore


def main(path: str, action: str) -> None:
    # As an application would: library logs are quiet until structlog is configured.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    store = SqliteRunStore(path, busy_timeout_s=10.0)
    try:
        if action == "initialize":
            store.initialize()
            result: object = None
        elif action == "append":
            store.append_events("r", [RunStartedEvent(run_id="r", seq=1000)])
            result = None
        elif action == "query":
            result = [event.seq for event in store.query_events("r")]
        else:
            raise SystemExit(f"unknown action {action!r}")
        print(json.dumps({"ok": True, "result": result}))
    except Exception as exc:
        print(json.dumps({"ok": False, "error_type": type(exc).__name__, "message": str(exc)}))
    finally:
        try:
            store.close()
        except Exception:
            pass


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
