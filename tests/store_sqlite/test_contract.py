"""The shared RunStore contract, run against SQLite files and the in-memory database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from themis.testing import RunStoreContract
from themis_store_sqlite import SqliteRunStore


class TestSqliteFileStoreContract(RunStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteRunStore]:  # type: ignore[override]
        created = SqliteRunStore(tmp_path / "contract.sqlite3")
        created.initialize()
        yield created
        created.close()


class TestSqliteMemoryStoreContract(RunStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[SqliteRunStore]:  # type: ignore[override]
        created = SqliteRunStore(":memory:")
        created.initialize()
        yield created
        created.close()
