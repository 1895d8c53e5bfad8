"""Run bundles: a whole run (snapshot, every event, every blob it references) as JSON Lines."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from themis.core.base import FrozenModel
from themis.core.events import RunEvent, event_from_dict
from themis.core.inspection import get_run_snapshot
from themis.core.logs import get_logger
from themis.core.protocols import RunStore
from themis.core.snapshot import RunSnapshot

__all__ = ["BundleImportResult", "RunBundleHeader", "export_run_bundle", "import_run_bundle"]

log = get_logger(__name__)


class RunBundleHeader(FrozenModel):
    """The first line of a run bundle; events and blobs follow, one JSON object a line."""

    schema_version: str = "1"
    bundle_kind: str | None = "run"
    run_id: str
    snapshot: RunSnapshot


class BundleImportResult(FrozenModel):
    """What an import added: the run, the bundle's kind, its records and the events appended."""

    run_id: str
    bundle_kind: str
    records: int
    events: int


PathOrFile = str | os.PathLike[str] | IO[str]


@contextmanager
def _opened(target: PathOrFile, mode: str) -> Iterator[IO[str]]:
    if isinstance(target, (str, os.PathLike)):
        with open(target, mode, encoding="utf-8") as handle:
            yield handle
    else:
        yield target


def _blob_refs(event: dict[str, Any]) -> Iterator[str]:
    for name, value in event.items():
        if name.endswith("_blob_ref") and isinstance(value, str):
            yield value


def export_run_bundle(store: RunStore, run_id: str, path: PathOrFile) -> int:
    """Write the whole run as JSON Lines (header, events, blobs); returns the event count."""
    snapshot = get_run_snapshot(store, run_id)
    header = RunBundleHeader(run_id=run_id, snapshot=snapshot)
    refs: dict[str, None] = {}
    count = 0
    with _opened(path, "w") as out:
        out.write(json.dumps(header.model_dump(mode="json"), sort_keys=True) + "\n")
        for event in store.query_events(run_id):
            data = event.to_dict()
            refs.update(dict.fromkeys(_blob_refs(data)))
            out.write(json.dumps({"record": "event", "event": data}, sort_keys=True) + "\n")
            count += 1
        for ref in refs:
            found = store.load_blob(ref)
            if found is None:
                raise ValueError(
                    f"run {run_id} references blob {ref}, which {type(store).__name__} does "
                    "not hold; the run cannot be exported whole"
                )
            media_type, blob = found
            line = {
                "record": "blob",
                "ref": ref,
                "media_type": media_type,
                "data": base64.b64encode(blob).decode("ascii"),
            }
            out.write(json.dumps(line, sort_keys=True) + "\n")
    log.info("bundle.exported", run_id=run_id, kind="run", events=count, blobs=len(refs))
    return count


def import_run_bundle(store: RunStore, path: PathOrFile) -> BundleImportResult:
    """Load a run bundle: snapshot, blobs, then every event with its original ``seq``."""
    events: list[RunEvent] = []
    blobs: dict[str, tuple[str, bytes]] = {}
    with _opened(path, "r") as source:
        lines = (line for line in source if line.strip())
        first = next(lines, None)
        if first is None:
            raise ValueError("the run bundle is empty; expected a header line first")
        data = json.loads(first)
        kind = data.get("bundle_kind") if isinstance(data, dict) else None
        if kind != "run":
            raise ValueError(
                f"this is a {kind!r} bundle, not a run bundle; import it with "
                "import_bundle (or the matching import_<kind>_bundle)"
            )
        header = RunBundleHeader.model_validate(data)
        if header.snapshot.run_id != header.run_id:
            raise ValueError(
                f"the run bundle says run {header.run_id}, but its snapshot's identity "
                f"hashes to {header.snapshot.run_id}; the bundle was edited or is corrupt"
            )
        for number, line in enumerate(lines, start=2):
            item = json.loads(line)
            if item.get("record") == "event":
                event = event_from_dict(item["event"])
                if event.run_id != header.run_id or event.seq is None:
                    raise ValueError(
                        f"line {number} of the run bundle holds an event of run "
                        f"{event.run_id} with seq {event.seq}; every event must belong to "
                        f"run {header.run_id} and carry its seq"
                    )
                events.append(event)
            elif item.get("record") == "blob":
                blob = base64.b64decode(item["data"])
                actual = "sha256:" + hashlib.sha256(blob).hexdigest()
                if actual != item["ref"]:
                    raise ValueError(
                        f"line {number} of the run bundle holds blob {item['ref']}, but its "
                        f"bytes hash to {actual}; the bundle is corrupt"
                    )
                blobs[actual] = (str(item.get("media_type", "application/json")), blob)
            else:
                raise ValueError(
                    f"line {number} of the run bundle is neither an event nor a blob record"
                )
    missing = sorted({r for e in events for r in _blob_refs(e.to_dict()) if r not in blobs})
    if missing:
        raise ValueError(
            f"the run bundle's events reference blobs it does not carry: {missing[:3]}; "
            "export the run again with export_run_bundle"
        )
    store.initialize()
    if store.load_snapshot(header.run_id) is None:
        store.persist_snapshot(header.snapshot)
    for media_type, blob in blobs.values():
        store.store_blob(blob, media_type)
    if events:
        store.append_events(header.run_id, events)
    log.info("bundle.imported", run_id=header.run_id, kind="run", events=len(events))
    return BundleImportResult(
        run_id=header.run_id, bundle_kind="run", records=len(events), events=len(events)
    )
