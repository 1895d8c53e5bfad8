"""Build datasets from inline rows or from JSONL / JSON files."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from themis.core.errors import ConfigError, ThemisError
from themis.core.models import Case, Dataset

__all__ = ["MissingOptionalDependencyError", "dataset_from_inline", "dataset_from_jsonl"]


class MissingOptionalDependencyError(ThemisError, ImportError):
    """An optional dependency needed for this input is not installed."""


def _case_from_row(
    row: Any,
    index: int,
    *,
    where: str,
    input_field: str,
    expected_output_field: str,
    case_id_field: str,
) -> Case:
    if not isinstance(row, Mapping):
        raise ConfigError(f"{where}: row {index} is a {type(row).__name__}, expected an object")
    if input_field not in row:
        raise ConfigError(
            f"{where}: row {index} has no {input_field!r} field "
            f"(fields: {sorted(row)}); set input_field to the field that holds the input"
        )
    case_id = row.get(case_id_field)
    metadata = row.get("metadata") or {}
    return Case(
        case_id=str(case_id) if case_id is not None else f"case-{index}",
        input=row[input_field],
        expected_output=row.get(expected_output_field),
        metadata={str(k): str(v) for k, v in metadata.items()},
    )


def dataset_from_inline(
    rows: Iterable[Mapping[str, Any]],
    *,
    dataset_id: str = "inline",
    revision: str | None = "inline",
    input_field: str = "input",
    expected_output_field: str = "expected_output",
    case_id_field: str = "case_id",
    metadata: Mapping[str, str] | None = None,
) -> Dataset:
    """A dataset from mappings; a row without a case id becomes ``case-{i}`` (from 1)."""
    cases = [
        _case_from_row(
            row,
            i,
            where=f"dataset {dataset_id!r}",
            input_field=input_field,
            expected_output_field=expected_output_field,
            case_id_field=case_id_field,
        )
        for i, row in enumerate(rows, start=1)
    ]
    return Dataset(
        dataset_id=dataset_id, cases=cases, revision=revision, metadata=dict(metadata or {})
    )


def _read_rows(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"dataset file {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"dataset path {path} is a directory; name a .jsonl file") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON ({exc})") from exc
        return list(rows)
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{line_no}: invalid JSON line ({exc.msg})") from exc
    return rows


def dataset_from_jsonl(
    path: str | Path,
    *,
    dataset_id: str | None = None,
    revision: str | None = None,
    input_field: str = "input",
    expected_output_field: str = "expected_output",
    case_id_field: str = "case_id",
    metadata: Mapping[str, str] | None = None,
) -> Dataset:
    """A dataset from a JSONL file (or a JSON list of rows); the id defaults to the stem."""
    file = Path(path)
    rows = _read_rows(file)
    name = dataset_id or file.stem
    cases = [
        _case_from_row(
            row,
            i,
            where=str(file),
            input_field=input_field,
            expected_output_field=expected_output_field,
            case_id_field=case_id_field,
        )
        for i, row in enumerate(rows, start=1)
    ]
    try:
        return Dataset(
            dataset_id=name, cases=cases, revision=revision, metadata=dict(metadata or {})
        )
    except ValueError as exc:
        raise ConfigError(f"{file}: {exc}") from exc
