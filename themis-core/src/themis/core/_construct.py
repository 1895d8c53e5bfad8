"""``model_construct`` without its per-call cost, for models the runtime builds by the million.

pydantic's ``model_construct`` asks ``inspect.signature`` of every default factory on every
call (to learn whether it takes the validated data), which makes it slower than validating.
``construct`` works out each model class's defaults once and then only fills a dict.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = [
    "SET_DICT",
    "SET_EXTRA",
    "SET_FIELDS_SET",
    "SET_PRIVATE",
    "construct",
    "field_sources",
    "keyword_parameters",
    "maker",
]

M = TypeVar("M", bound=BaseModel)

_IMMUTABLE = (type(None), bool, int, float, str, bytes, enum.Enum, frozenset)
_MISSING: Any = object()


class _Plan:
    """A model class's fields and defaults, worked out once."""

    __slots__ = ("copies", "extra", "factories", "fields_sets", "names", "required", "template")

    def __init__(self, cls: type[BaseModel]) -> None:
        # Every field in declared order; a default that must be built per call stays
        # _MISSING in the template and is filled in by ``construct``.
        self.template: dict[str, Any] = {}
        self.factories: list[tuple[str, Any]] = []
        self.copies: list[tuple[str, Any]] = []
        self.required: frozenset[str] = frozenset(
            name for name, field in cls.__pydantic_fields__.items() if field.is_required()
        )
        for name, field in cls.__pydantic_fields__.items():
            self.template[name] = _MISSING
            if field.default_factory is not None:
                self.factories.append((name, field.default_factory))
            elif field.default is PydanticUndefined:
                pass
            elif isinstance(field.default, _IMMUTABLE):
                self.template[name] = field.default
            else:
                self.copies.append((name, field.default))
        self.names = frozenset(self.template)
        self.extra = cls.model_config.get("extra") == "allow"
        # A frozen model's fields set never changes (pydantic copies it before a
        # ``model_copy`` updates it), so models built from the same keys share one set:
        # one set per event would be the largest part of an event's memory.
        self.fields_sets: dict[tuple[str, ...], set[str]] | None = (
            {} if cls.model_config.get("frozen") else None
        )


_PLANS: dict[type[BaseModel], _Plan | None] = {}

# ``BaseModel``'s slots, set through their own descriptors: ``object.__setattr__`` looks
# each one up by name first (four per model, about 0.3 us of a 1.5 us build).
SET_DICT = BaseModel.__dict__["__dict__"].__set__
SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__


def _plan_for(cls: type[BaseModel]) -> _Plan | None:
    """The class's plan, or None when it needs pydantic's own path."""
    if cls.__pydantic_post_init__ or cls.__pydantic_root_model__:
        return None
    for field in cls.__pydantic_fields__.values():
        if field.alias is not None or field.validation_alias is not None:
            return None
        if field.default_factory is not None and field.default_factory_takes_validated_data:
            return None
    return _Plan(cls)


def construct(cls: type[M], fields_set: set[str] | None, values: dict[str, Any]) -> M:
    """What ``cls.model_construct(fields_set, **values)`` returns, built without validation."""
    try:
        plan = _PLANS[cls]
    except KeyError:
        plan = _PLANS[cls] = _plan_for(cls)
    if plan is None:
        return BaseModel.model_construct.__func__(cls, fields_set, **values)  # type: ignore[attr-defined,no-any-return]
    given = values.keys()
    extra: dict[str, Any] | None = None
    if given <= plan.names:
        data = plan.template.copy()
        data.update(values)
    else:
        data = plan.template.copy()
        extra = {}
        for name, value in values.items():
            if name in plan.names:
                data[name] = value
            else:
                extra[name] = value
    for name, factory in plan.factories:
        if name not in values:
            data[name] = factory()
    for name, default in plan.copies:
        if name not in values:
            data[name] = copy.deepcopy(default)
    if not plan.required <= given:
        # Like pydantic, a missing required field is simply absent.
        data = {name: value for name, value in data.items() if value is not _MISSING}
    if fields_set is None:
        shared = plan.fields_sets
        if shared is None or extra is not None:
            fields_set = set(given) if extra is None else set(given) - extra.keys()
        else:
            key = tuple(values)
            fields_set = shared.get(key)
            if fields_set is None:
                fields_set = shared[key] = set(given)
    model = cls.__new__(cls)
    SET_DICT(model, data)
    SET_FIELDS_SET(model, fields_set)
    SET_EXTRA(model, (extra or {}) if plan.extra else None)
    SET_PRIVATE(model, None)
    return model


def maker(
    cls: type[M],
    *names: str,
    fields_set: set[str] | None = None,
    shared: tuple[str, ...] = (),
) -> Callable[..., M]:
    """A function that builds ``cls`` from exactly the keyword arguments ``names``.

    What ``construct`` does, specialised once for one call site: the runtime builds a few
    models per case (events, contexts), and a generic ``construct`` spends most of its time
    finding out which fields it was given, a question with one answer at each call site.
    The function's body is generated (as ``dataclasses`` does): one dict display in the
    field order, the site's values, constant defaults and default factories filled in.
    Every model it makes shares one fields set: ``fields_set`` (the names given) or a set
    of ``names``.
    The values of the ``shared`` names (some of ``names``) come from a dict passed as the
    one positional argument, ``make(ids, other=...)``: the ids every event of a case
    carries. Spread into keywords instead (``make(**ids, other=...)``), they made the call
    cost five times as much (1.4 against 0.25 us for an event's twelve arguments).
    """
    plan = _checked_plan(cls, names, shared)
    namespace: dict[str, Any] = {
        "_new": object.__new__,
        "_set_dict": SET_DICT,
        "_set_fields_set": SET_FIELDS_SET,
        "_set_extra": SET_EXTRA,
        "_set_private": SET_PRIVATE,
        "_cls": cls,
        "_fields_set": set(names) if fields_set is None else fields_set,
    }
    entries = [
        f"{name!r}: {source}"
        for name, source in field_sources(cls, names, shared=shared, namespace=namespace)
    ]
    extra = "{}" if plan.extra else "None"
    source = (
        f"def make_{cls.__name__}({keyword_parameters(names, shared)}):\n"
        f"    model = _new(_cls)\n"
        f"    _set_dict(model, {{{', '.join(entries)}}})\n"
        f"    _set_fields_set(model, _fields_set)\n"
        f"    _set_extra(model, {extra})\n"
        f"    _set_private(model, None)\n"
        f"    return model\n"
    )
    # The source holds field names only (identifiers pydantic accepted), never values.
    exec(source, namespace)
    made: Callable[..., M] = namespace[f"make_{cls.__name__}"]
    return made


def _checked_plan(cls: type[BaseModel], names: tuple[str, ...], shared: tuple[str, ...]) -> _Plan:
    """The plan of a generated builder of ``cls`` from ``names``; TypeError when it cannot be."""
    plan = _plan_for(cls)
    fields = cls.__pydantic_fields__
    unknown = [name for name in names if name not in fields]
    if plan is None or unknown or len(set(names)) != len(names):
        raise TypeError(f"no maker for {cls.__name__} with fields {names}: {unknown or names}")
    if not set(shared) <= set(names):
        raise TypeError(f"shared fields {shared} of a {cls.__name__} maker must be among {names}")
    missing = plan.required - set(names)
    if missing:
        raise TypeError(f"a {cls.__name__} maker must set {sorted(missing)}")
    return plan


def field_sources(
    cls: type[BaseModel],
    names: tuple[str, ...],
    *,
    shared: tuple[str, ...] = (),
    namespace: dict[str, Any],
    computed: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Each field of ``cls`` in declared order with the expression a generated builder
    fills it from: ``_shared[name]`` for the ``shared`` names, the keyword parameter for
    the other ``names``, a constant default, a default factory's call or a copy of a
    mutable default. ``computed`` gives the expression of a defaulted field by name
    instead. The constants and factories are added to ``namespace``.
    """
    plan = _checked_plan(cls, names, shared)
    namespace.setdefault("_deepcopy", copy.deepcopy)
    factories = dict(plan.factories)
    copies = dict(plan.copies)
    sources = []
    for index, name in enumerate(plan.template):
        if name in shared:
            source = f"_shared[{name!r}]"
        elif name in names:
            source = name
        elif computed is not None and name in computed:
            source = computed[name]
        elif name in factories:
            namespace[f"_factory{index}"] = factories[name]
            source = f"_factory{index}()"
        elif name in copies:
            namespace[f"_default{index}"] = copies[name]
            source = f"_deepcopy(_default{index})"
        else:
            namespace[f"_default{index}"] = plan.template[name]
            source = f"_default{index}"
        sources.append((name, source))
    return sources


def keyword_parameters(names: tuple[str, ...], shared: tuple[str, ...]) -> str:
    """The parameter list of a generated builder: the shared dict, then keywords only."""
    keywords = ", ".join(name for name in names if name not in shared)
    return ", ".join(
        part for part in ("_shared" if shared else "", f"*, {keywords}" if keywords else "") if part
    )
