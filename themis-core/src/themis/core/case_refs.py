"""Case identity: a case is addressed by its dataset and id, joined into ``case_key``."""

from __future__ import annotations

from pydantic import computed_field

from themis.core.base import HashableModel

__all__ = ["CaseRef", "case_key_for", "resolve_case_key"]


def case_key_for(dataset_id: str, case_id: str) -> str:
    """The join key of a case: ``f"{len(dataset_id)}:{dataset_id}:{case_id}"``."""
    return f"{len(dataset_id)}:{dataset_id}:{case_id}"


class CaseRef(HashableModel):
    """A (dataset_id, case_id) pair with its derived ``case_key``."""

    dataset_id: str
    case_id: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def case_key(self) -> str:
        return case_key_for(self.dataset_id, self.case_id)


def resolve_case_key(
    *, case_id: str, dataset_id: str | None = None, case_key: str | None = None
) -> str:
    """An explicit key first, then one derived from the dataset, then the bare case id."""
    if case_key:
        return case_key
    if dataset_id is not None:
        return case_key_for(dataset_id, case_id)
    return case_id
