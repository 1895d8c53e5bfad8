"""Two measured shortcuts for folding and reading whole logs: a paused collector, lean models."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel

from themis.core._construct import SET_DICT, SET_EXTRA, SET_FIELDS_SET, SET_PRIVATE, maker

M = TypeVar("M", bound=BaseModel)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic collector for the block, then file what it built as old.

    A bulk fold allocates millions of objects that all survive (they are the state), so
    the collector keeps rescanning a growing heap for cycles that do not exist; measured,
    that doubled the cost of folding a log. Reference counting still frees everything.
    Merely re-enabled, the collector would scan the block's survivors at its next young
    collection and again at the middle one (13% of a 20,000-case run, all of it finding
    nothing; 0.7-1.3 s after reading a 100,000-case stored result), so the block ends
    with ``promote_to_oldest``.
    """
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            promote_to_oldest()
            gc.enable()


def promote_to_oldest() -> None:
    """Move every object the collector tracks to its oldest generation, in constant time.

    ``freeze()`` then ``unfreeze()`` does it without a scan; there only a full collection
    looks at them, as at any long-lived object, and cycles among them are still freed then.
    Skipped when the process has frozen objects itself (``gc.freeze`` before a fork),
    which ``unfreeze()`` would release.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


# One fields set per frozen model class, shared by every instance that has all its fields
# set; None for a class whose instances may change theirs.
_FULL_SETS: dict[type[BaseModel], set[str] | None] = {}


def _full_set(cls: type[BaseModel]) -> set[str] | None:
    if cls not in _FULL_SETS:
        frozen = bool(cls.model_config.get("frozen"))
        _FULL_SETS[cls] = set(cls.model_fields) if frozen else None
    return _FULL_SETS[cls]


def full_fields_set(cls: type[BaseModel]) -> set[str]:
    """The fields set ``rebuild`` gives every model of the frozen class ``cls``."""
    full = _FULL_SETS.get(cls) or _full_set(cls)
    if full is None:
        raise TypeError(f"{cls.__name__} is not frozen: its models cannot share a fields set")
    return full


def share_fields_set(model: M) -> M:
    """Give ``model`` its class's shared fields set when it has every field set.

    A model validated from a dump has all its fields set, and pydantic gives each one a set
    of their names: 728 bytes from five names on, more than the rest of a small output
    model. The fold keeps several such models per case; frozen ones can share one set
    (``model_copy`` copies the set before changing it, and a frozen model changes nothing).
    """
    cls = type(model)
    full = _FULL_SETS.get(cls) or _full_set(cls)
    if full is not None and model.__pydantic_fields_set__ == full:
        SET_FIELDS_SET(model, full)
    return model


def trusted(
    cls: type[M],
    values: dict[str, Any],
    private: dict[str, Any] | None = None,
    *,
    fields_set: set[str] | None = None,
) -> M:
    """A model from a value for every field, all already valid (what ``model_construct`` does).

    ``model_construct`` walks fields and defaults in Python, and validating again would
    re-check models the fold already validated; one model per case per read (and one per
    case in the fold) makes that the largest cost left. ``values`` must name every field;
    ``fields_set`` defaults to all of them (pass an empty set for "all defaults").
    """
    model = cls.__new__(cls)
    SET_DICT(model, values)
    if fields_set is None:
        fields_set = _FULL_SETS.get(cls) or _full_set(cls) or set(values)
    SET_FIELDS_SET(model, fields_set)
    SET_EXTRA(model, None)
    SET_PRIVATE(model, private)
    return model


class ExactFields(set[str]):
    """The fields set of an event whose inline output is an exact dump (``output_dump``).

    The pipeline dumps each output into its event, and the fold of the same process
    validated that dump straight back into the model: a second copy of every output,
    held for the rest of the run. An event made by an ``exact_makers`` (only with an exact
    dump inline) carries this set, and the fold builds the model around the dump itself
    (``rebuild``); every other event (a cache hit, a blob ref, an event read back from a
    store) is validated as before. The mark is on the event, not the payload, because
    pydantic serializes a dict subclass several times slower than a dict. A copy of the
    set, and so ``model_copy`` of the event (which may replace its payload), is a plain
    set, and a pickle holds a plain set.
    """

    __slots__ = ()

    def __copy__(self) -> set[str]:
        return set(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> set[str]:
        return set(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (set, (list(self),))


def _float_value(dump: dict[str, Any]) -> bool:
    # Anything else comes from a score built without validation: validation judges it.
    return type(dump["value"]) is float


def _no_nested_models(dump: dict[str, Any]) -> bool:
    # A nested model dumps as a dict, which only validation turns back into the model.
    return dump["trace"] is None and dump["conversation"] is None


def _always(dump: dict[str, Any]) -> bool:
    return True


# Per exact class (a subclass may add fields, validators or a config of its own), the
# test that its dump holds nothing validation would change or refuse. Their other fields
# are strings, numbers, None, containers of those, or ``JSONValue``, which validation
# keeps as they are.
_EXACT: dict[type[BaseModel], Any] = {}


# JSON mode keeps a ``JSONValue`` of these types as it is, a float when it is finite (it
# makes an infinity or a NaN None).
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _generation_dump(model: BaseModel) -> dict[str, Any] | None:
    """The JSON-mode dump of a ``GenerationResult`` with a scalar output and nothing
    nested (its usual shape), written out; None for any other."""
    fields = model.__dict__
    output = fields["final_output"]
    usage = fields["token_usage"]
    latency = fields["latency_ms"]
    if (
        type(output) not in _JSON_SCALARS
        or (type(output) is float and output - output != 0.0)  # not finite
        or fields["trace"] is not None
        or fields["conversation"] is not None
        or fields["artifacts"] is not None
        or type(fields["candidate_id"]) is not str
        or (latency is not None and type(latency) is not float)
    ):
        return None
    if usage is not None:
        if type(usage) is not dict:
            return None
        for name, count in usage.items():
            if type(name) is not str or type(count) is not int:
                return None
        usage = dict(usage)
    return {
        "candidate_id": fields["candidate_id"],
        "final_output": fields["final_output"],
        "trace": None,
        "conversation": None,
        "artifacts": None,
        "token_usage": usage,
        "latency_ms": latency,
    }


def _score_dump(model: BaseModel) -> dict[str, Any] | None:
    """The JSON-mode dump of a ``Score`` without details (its usual shape), written out;
    None for any other."""
    fields = model.__dict__
    details = fields["details"]
    if (
        type(fields["value"]) is not float
        or type(fields["metric_id"]) is not str
        or type(details) is not dict
        or details
    ):
        return None
    return {"metric_id": fields["metric_id"], "value": fields["value"], "details": {}}


# Per exact class, a dump written out for its usual shape: the serializer's generic walk
# costs more than the model's own validation did (about 1 us of a case's 80).
_FAST_DUMPS: dict[type[BaseModel], Any] = {}


def _exact_classes() -> dict[type[BaseModel], Any]:
    if not _EXACT:
        from themis.core.models import GenerationResult, ParsedOutput, ReducedCandidate, Score

        _FAST_DUMPS[GenerationResult] = _generation_dump
        _FAST_DUMPS[Score] = _score_dump
        _EXACT[GenerationResult] = _no_nested_models
        _EXACT[ReducedCandidate] = _always
        _EXACT[ParsedOutput] = _always
        _EXACT[Score] = _float_value
    return _EXACT


def output_dump(model: BaseModel) -> tuple[dict[str, Any], bool]:
    """``model``'s JSON-mode dump, and whether validating it would give a model equal to
    it field for field (then ``rebuild`` may take it back instead)."""
    checks = _EXACT or _exact_classes()
    cls = type(model)
    fast = _FAST_DUMPS.get(cls)
    if fast is not None:
        written: dict[str, Any] | None = fast(model)
        if written is not None:
            return written, True  # a shape the exact checks pass
    dump: dict[str, Any] = model.__pydantic_serializer__.to_python(model, mode="json")
    check = checks.get(cls)
    return dump, check is not None and check(dump)


def exact_makers(
    cls: type[M], *names: str, shared: tuple[str, ...] = ()
) -> tuple[Callable[..., M], Callable[..., tuple[Any, ...]]]:
    """Two makers of events that carry an exact dump inline, both marked with an
    ``ExactFields`` set (which costs nothing per event): ``maker``'s, which builds the
    event, and ``record_maker``'s, which builds the record the in-memory log keeps and its
    folder reads by position. A run takes the second when its store keeps records
    (``EventWriter.takes_records``); any other store needs the event, which the first
    builds for less than a record and its rebuilding would cost."""
    from themis.core._event_log import record_maker

    fields_set = ExactFields(names)
    return (
        maker(cls, *names, fields_set=fields_set, shared=shared),
        record_maker(cls, *names, fields_set=fields_set, shared=shared),  # type: ignore[arg-type]
    )


def rebuild(cls: type[M], dump: dict[str, Any]) -> M:
    """The model ``dump`` is the exact dump of, built around it: no validation, no copy.

    The model and the event that carries ``dump`` share it, as they share the containers
    inside it; both are frozen, and neither is changed after the event is emitted.
    """
    model = cls.__new__(cls)
    SET_DICT(model, dump)
    SET_FIELDS_SET(model, _FULL_SETS.get(cls) or _full_set(cls))
    SET_EXTRA(model, None)
    SET_PRIVATE(model, None)
    return model


class Shared(dict[Any, Any]):
    """A read-only dict that many case states and results hold instead of one each.

    Most of a case's containers stay empty for the whole run (failures, blob refs,
    evaluations), and every case's rank of its case error stays 0: one shared instance of
    each instead of one per case saves about 0.9 KB per case state and 0.3 KB per case
    result. It never goes into an event's payload: pydantic serializes a dict subclass
    several times slower than a dict.
    Writing to it raises, so a write that forgot ``own`` fails loudly instead of changing
    every case. A copy of it is a plain dict; a deep copy or a pickle of a model that
    holds it keeps it shared and read-only.
    """

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "this dict is read-only: Themis shares one such dict among the states and "
            "results of many cases to save memory; change a copy, dict(...), instead"
        )

    __setitem__ = __delitem__ = __ior__ = _read_only
    setdefault = update = _read_only

    # Removing what is not there changes nothing, so the fold may do it to any state.
    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            self._read_only()
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[Any, Any]:
        if self:
            self._read_only()
        return dict.popitem(self)

    def clear(self) -> None:
        if self:
            self._read_only()

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Shared:
        # Kept shared: ``deepcopy`` hands its first copy to every later holder of the
        # same dict, so a plain copy would become one mutable dict shared by every case
        # state of the copied run. Writes go through ``own`` there too.
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # A pickle, too, writes a dict once for all its holders: it stays read-only.
        return (Shared, (dict(self),))


def own(model: BaseModel, name: str) -> dict[Any, Any]:
    """``model``'s dict field ``name``, first made its own when it is a ``Shared`` one."""
    fields = model.__dict__
    value: dict[Any, Any] = fields[name]
    if type(value) is Shared:
        value = fields[name] = dict(value)
    return value


# The containers that stay empty unless a case fails or is judged, and the private
# attributes of a case state without a case error (see ``Shared``).
EMPTY: Shared = Shared()
NO_CASE_ERROR: Shared = Shared(_case_error_rank=0)


def set_case_error_rank(case_state: BaseModel, rank: int) -> None:
    """Set a case state's private ``_case_error_rank`` without writing to a shared dict."""
    SET_PRIVATE(case_state, NO_CASE_ERROR if rank == 0 else {"_case_error_rank": rank})
