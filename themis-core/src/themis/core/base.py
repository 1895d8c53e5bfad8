"""Base model classes and the canonical JSON form that every identity hash is built on."""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
from collections.abc import Callable
from typing import Any, Self, TypeAlias

from pydantic import BaseModel, ConfigDict

from themis.core._construct import construct

__all__ = [
    "FrozenModel",
    "HashableModel",
    "JSONValue",
    "canonical_json",
    "content_hash",
    "hash_with_items",
]

# A recursive JSON value. Kept as ``Any`` for validation speed; the canonical encoder below
# rejects anything that is not JSON (or a documented convertible) when it is hashed.
JSONValue: TypeAlias = Any

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def _encoder() -> Callable[[Any], str]:
    """``_ENCODER.encode`` for canonical values (from ``to_canonical``), at half its cost.

    ``JSONEncoder.encode`` builds a C encoder with the same settings on every call, which
    cost more than encoding a case or an output; this one is built once. It checks for no
    cycles (markers None): ``to_canonical`` builds every container afresh, so its values
    hold none. A string or an int, most of a stage key's values, skips the encoder, written
    as the C encoder writes them (``int.__repr__``; a bool is not an int here).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return _ENCODER.encode
    encode_chunks = make(
        None,
        _ENCODER.default,
        json.encoder.encode_basestring_ascii,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        True,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    encode_string = json.encoder.encode_basestring_ascii
    int_repr = int.__repr__

    def encode(value: Any) -> str:
        kind = type(value)
        if kind is str:
            return encode_string(value)
        if kind is int:
            return int_repr(value)
        return "".join(encode_chunks(value, 0))

    return encode


_encode = _encoder()
_encode_string = json.encoder.encode_basestring_ascii
_int_repr = int.__repr__
_EMPTY_OBJECT_HASH = hashlib.sha256(b"{}").hexdigest()


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
        names = _HASHED_FIELDS.get(type(self))
        if names is None:
            names = _hashed_fields(type(self))
        values = self.__dict__
        return {name: to_canonical(values[name]) for name in names}

    def compute_hash(self) -> str:
        """Lowercase hex SHA-256 of the canonical JSON of this model."""
        cls = type(self)
        if cls.canonical_data is not HashableModel.canonical_data:
            # An override may return values still to convert.
            return content_hash(self.canonical_data())
        # The text ``canonical_json(self.canonical_data())`` gives, written field by field
        # between the pieces worked out once per class: a case and its outputs are hashed
        # for the stage-cache keys of every case, and the dict and its sorting cost more
        # than the values.
        plan = _HASH_PLANS.get(cls)
        if plan is None:
            plan = _hash_plan(cls)
        if not plan:
            return _EMPTY_OBJECT_HASH
        return hashlib.sha256(_plan_text(plan, self.__dict__).encode("utf-8")).hexdigest()


def _plan_text(
    plan: tuple[tuple[str, str], ...], values: dict[str, Any], name: str = "", text: str = ""
) -> str:
    """The canonical JSON of a model's field ``values`` by its hash ``plan``; with ``name``,
    that field written as ``text``, its canonical JSON worked out already."""
    parts: list[str] = []
    append = parts.append
    for piece, field in plan:
        append(piece)
        append(text if field == name else _value_json(values[field]))
    append("}")
    return "".join(parts)


# The names ``canonical_data`` reads, per class: pydantic's ``model_fields`` is a deprecated
# instance property whose lookup cost more than converting the values (hashing a case's
# outputs is on the stage cache's path, several times per case).
_HASHED_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}


def _hashed_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    names = tuple(name for name, field in cls.model_fields.items() if not field.exclude)
    _HASHED_FIELDS[cls] = names
    return names


# Per class, its hashed fields in the canonical (sorted) order, each with the text before its
# value: ``{"name":`` for the first, ``,"name":`` for the others.
_HASH_PLANS: dict[type[BaseModel], tuple[tuple[str, str], ...]] = {}


def _hash_plan(cls: type[BaseModel]) -> tuple[tuple[str, str], ...]:
    names = _HASHED_FIELDS.get(cls) or _hashed_fields(cls)
    plan = tuple(
        (("," if index else "{") + _encode(name) + ":", name)
        for index, name in enumerate(sorted(names))
    )
    _HASH_PLANS[cls] = plan
    return plan


def _value_json(value: Any) -> str:
    """``_encode(to_canonical(value))``, with the usual field values written at once."""
    kind = type(value)
    if kind is str:
        return _encode_string(value)
    if kind is int:
        return _int_repr(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if (kind is dict or kind is list) and not value:
        return "{}" if kind is dict else "[]"
    return _encode(to_canonical(value))


def _is_component(value: Any) -> bool:
    return (
        not isinstance(value, type)
        and hasattr(value, "component_id")
        and hasattr(value, "version")
        and hasattr(value, "fingerprint")
    )


_PLAIN = frozenset({str, int, float, bool, type(None)})


def to_canonical(value: Any) -> Any:
    """Convert ``value`` into plain JSON types following the canonical-form rules."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {str(k): to_canonical(v) for k, v in value.items()}
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
    return _encode(to_canonical(value))


def content_hash(value: Any) -> str:
    """Lowercase hex SHA-256 of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def hash_with_items(model: HashableModel, name: str) -> tuple[str, bytes]:
    """``model.compute_hash()`` and the SHA-256 digests of each model in its list field
    ``name`` (``item.compute_hash()`` as bytes), concatenated in order.

    The canonical JSON of a dataset holds that of each of its cases, and a run hashes each
    case again for its stage-cache keys: made from one canonical text of each case, the
    dataset's fingerprint at compile time gives every case's hash for a few hundred
    nanoseconds more a case, instead of the run working each one out again.
    """
    cls = type(model)
    values = model.__dict__
    items = values[name]
    digests = bytearray()
    texts: list[str] = []
    for item in items:
        plan = None
        if type(item).canonical_data is HashableModel.canonical_data:
            plan = _HASH_PLANS.get(type(item))
            if plan is None:
                plan = _hash_plan(type(item))
        if plan:
            text = _plan_text(plan, item.__dict__)
            digests += hashlib.sha256(text.encode("utf-8")).digest()
        else:  # an override of canonical_data, or a model with no fields
            text = _encode(to_canonical(item))
            digests += bytes.fromhex(item.compute_hash())
        texts.append(text)
    if cls.canonical_data is not HashableModel.canonical_data:
        return model.compute_hash(), bytes(digests)
    # The model's own text, as ``compute_hash`` writes it, with the items' texts in place.
    plan = _HASH_PLANS.get(cls)
    if plan is None:
        plan = _hash_plan(cls)
    text = _plan_text(plan, values, name, "[" + ",".join(texts) + "]")
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), bytes(digests)


class HashTemplate:
    """``content_hash`` of a dict whose values are partly the same on every call.

    A stage-cache key is a dict of a few per-case values and several per-run ones (component
    refs with fingerprints, prompt specs); canonicalising and encoding the per-run ones for
    every case cost more than the rest of the lookup. Their canonical JSON is worked out
    once here, between the keys' sorted positions, and each call encodes only its own
    values: ``template.hash(case=h, seed=1)`` equals
    ``content_hash({**fixed, "case": h, "seed": 1})``.
    """

    __slots__ = ("_names", "_pieces", "sorted_hash")

    def __init__(self, fixed: dict[str, Any], variable: tuple[str, ...]) -> None:
        overlap = set(fixed) & set(variable)
        if overlap:
            raise ValueError(f"keys both fixed and variable: {sorted(overlap)}")
        # The text between two variable values, and the variables in key order.
        pieces: list[str] = []
        names: list[str] = []
        text = "{"
        for index, key in enumerate(sorted({*fixed, *variable})):
            text += ("," if index else "") + _encode(key) + ":"
            if key in fixed:
                text += _encode(to_canonical(fixed[key]))
            else:
                pieces.append(text)
                names.append(key)
                text = ""
        pieces.append(text + "}")
        self._pieces = tuple(pieces)
        self._names = tuple(names)
        # ``hash`` with the values given by position, in the variables' sorted order: the
        # stages' keys skip the keyword dict and the loop (a key or two per case).
        self.sorted_hash: Callable[..., str] = _positional_hash(self._pieces)

    def hash(self, **values: Any) -> str:
        """The content hash of the fixed values together with ``values`` (every variable)."""
        pieces = self._pieces
        value_json = _value_json
        parts = [pieces[0]]
        for index, name in enumerate(self._names, 1):
            parts.append(value_json(values[name]))
            parts.append(pieces[index])
        return hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()


def _positional_hash(pieces: tuple[str, ...]) -> Callable[..., str]:
    """The hash of the text ``pieces`` interleave with the JSON of each value given."""
    sha256 = hashlib.sha256
    value_json = _value_json
    if len(pieces) == 2:
        first, last = pieces

        def one(a: Any) -> str:
            return sha256((first + value_json(a) + last).encode("utf-8")).hexdigest()

        return one
    if len(pieces) == 3:
        first, second, last = pieces

        def two(a: Any, b: Any) -> str:
            text = first + value_json(a) + second + value_json(b) + last
            return sha256(text.encode("utf-8")).hexdigest()

        return two
    if len(pieces) == 4:
        first, second, third, last = pieces

        def three(a: Any, b: Any, c: Any) -> str:
            text = first + value_json(a) + second + value_json(b) + third + value_json(c) + last
            return sha256(text.encode("utf-8")).hexdigest()

        return three

    def many(*values: Any) -> str:
        if len(values) != len(pieces) - 1:
            raise TypeError(f"expected {len(pieces) - 1} values, got {len(values)}")
        parts = [pieces[0]]
        for value, piece in zip(values, pieces[1:], strict=True):
            parts.append(value_json(value))
            parts.append(piece)
        return sha256("".join(parts).encode("utf-8")).hexdigest()

    return many
