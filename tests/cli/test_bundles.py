"""``themis export`` and ``themis import``: stage bundles and whole-run bundles between stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(
    ("kind", "records"), [("generation", 3), ("reduction", 3), ("parse", 3), ("score", 5)]
)
def test_export_a_stage_bundle_to_stdout(
    cli: Any, ran: tuple[Path, str, str], kind: str, records: int
) -> None:
    _, spec, run_id = ran
    result = cli("export", kind, "--store", spec, "--run-id", run_id)
    assert result.code == 0, result.err
    bundle = result.json()
    assert (bundle["bundle_kind"], bundle["run_id"]) == (kind, run_id)
    assert bundle["snapshot"]["run_id"] == run_id
    assert len(bundle["records"]) == records  # 3 cases; BLEU failed on one


def test_score_bundle_round_trips_into_another_store(
    cli: Any, ran: tuple[Path, str, str], tmp_path: Path
) -> None:
    config, _, run_id = ran
    path = tmp_path / "bundles" / "scores.json"
    assert cli("export", "score", "--config", str(config), "--output", str(path)).code == 0
    target = f"sqlite:{tmp_path / 'target.db'}"
    result = cli("import", str(path), "--store", target)
    assert result.code == 0, result.err
    payload = result.json()
    assert payload["run_id"] == run_id and payload["bundle_kind"] == "score"
    assert payload["records"] == len(json.loads(path.read_text())["records"])
    events = cli("inspect", "events", "--store", target, "--run-id", run_id).json()
    assert {e["event_type"] for e in events} == {"score_completed"}


def test_run_bundle_moves_the_whole_run(
    cli: Any, ran: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, spec, run_id = ran
    exported = cli("export", "run", "--store", spec, "--run-id", run_id)
    assert exported.code == 0, exported.err
    lines = exported.out.splitlines()
    assert json.loads(lines[0])["bundle_kind"] == "run"
    path = tmp_path / "run.jsonl"
    path.write_text(exported.out)
    target = f"sqlite:{tmp_path / 'copy.db'}"
    imported = cli("import", str(path), "--store", target)
    assert imported.code == 0, imported.err
    assert imported.json()["bundle_kind"] == "run"
    original = cli("quickcheck", "--store", spec, "--run-id", run_id).json()
    copied = cli("quickcheck", "--store", target, "--run-id", run_id).json()
    assert copied == original


def test_a_bundle_without_kind_needs_the_kind_flag(
    cli: Any, ran: tuple[Path, str, str], tmp_path: Path
) -> None:
    config = str(ran[0])
    bundle = json.loads(cli("export", "parse", "--config", config).out)
    del bundle["bundle_kind"]  # as upstream wrote bundles
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(bundle))
    target = f"sqlite:{tmp_path / 'legacy.db'}"
    refused = cli("import", str(path), "--store", target)
    assert refused.code == 2
    assert "--kind" in refused.message
    accepted = cli("import", str(path), "--store", target, "--kind", "parse")
    assert accepted.code == 0, accepted.err
    assert accepted.json()["bundle_kind"] == "parse"


def test_import_needs_a_store(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("{}")
    result = cli("import", str(path))
    assert result.code == 2
    assert "--store SPEC" in result.message


def test_import_of_a_file_that_is_no_bundle_exits_2(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "junk.json"
    path.write_text("not json\nat all\n")
    result = cli("import", str(path), "--store", f"sqlite:{tmp_path / 'x.db'}")
    assert result.code == 2
    assert "neither a JSON bundle nor a JSON Lines run bundle" in result.message
