"""Base model classes and the canonical JSON form that every identity hash is built on."""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
from typing import Any, Self, TypeAlias

from pydantic import BaseModel, ConfigDict

from themis.core._construct import construct

__all__ = ["FrozenModel", "HashableModel", "JSONValue", "canonical_json", "content_hash"]

# A recursive JSON value. Kept as ``Any`` for validation speed; the canonical encoder below
# rejects anything that is not JSON (or a documented convertible) when it is hashed.
JSONValue: TypeAlias = Any

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


class FrozenModel(BaseModel):
    """An immutable pydantic model that rejects unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    @classmethod
    def model_construct(cls, _fields_set: set[str] | None = None, **values: Any) -> Self:  # type: ignore[override]
        """Build from trusted data without validation, as pydantic's does, at less cost.

        The runtime builds several models per case (events, contexts, outputs); pydantic's
        own ``model_construct`` walks the fields in Python and inspects default factories
        on every call, so the defaults are worked out once per class instead.
        """
        return construct(cls, _fields_set, values)


class HashableModel(FrozenModel):
    """A frozen model with a canonical form and a content hash."""

    def canonical_data(self) -> dict[str, Any]:
        """Every declared field not marked ``exclude``, in canonical (JSON-ready) form."""
        data: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            if field.exclude:
                continue
            data[name] = to_canonical(getattr(self, name))
        return data

    def compute_hash(self) -> str:
        """Lowercase hex SHA-256 of the canonical JSON of this model."""
        return content_hash(self.canonical_data())


def _is_component(value: Any) -> bool:
    return (
        not isinstance(value, type)
        and hasattr(value, "component_id")
        and hasattr(value, "version")
        and hasattr(value, "fingerprint")
    )


def to_canonical(value: Any) -> Any:
    """Convert ``value`` into plain JSON types following the canonical-form rules."""
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, enum.Enum):
            return value.value
        return value
    if isinstance(value, dict):
        return {str(k): to_canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_canonical(v) for v in value]
    if isinstance(value, HashableModel):
        return value.canonical_data()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return to_canonical(value.value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if _is_component(value):
        fingerprint = value.fingerprint
        return {
            "component_id": value.component_id,
            "version": value.version,
            "fingerprint": fingerprint() if callable(fingerprint) else fingerprint,
        }
    raise TypeError(
        f"cannot put a {type(value).__name__} into canonical JSON; "
        "use JSON values, pydantic models or components"
    )


def canonical_json(value: Any) -> str:
    """Sorted-key, compact, ASCII JSON of ``value``; NaN and infinities raise ``ValueError``."""
    return _ENCODER.encode(to_canonical(value))


def content_hash(value: Any) -> str:
    """Lowercase hex SHA-256 of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
