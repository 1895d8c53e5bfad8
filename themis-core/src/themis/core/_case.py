"""A case's input, the run's context, and the base every stage of a case's pipeline builds on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from themis.core.base import canonical_json
from themis.core.logs import get_logger
from themis.core.models import Case, GenerationResult

if TYPE_CHECKING:
    from pydantic import BaseModel

    from themis.core._cache_reader import CacheReader
    from themis.core._compile import CompiledComponents
    from themis.core._limits import RunLimits
    from themis.core._observers import Observers
    from themis.core._writer import EventWriter
    from themis.core.config import RuntimeConfig
    from themis.core.models import Dataset
    from themis.core.protocols import RunStore
    from themis.core.results import CaseExecutionState
    from themis.core.snapshot import RunSnapshot

__all__ = [
    "STAGE_ORDER",
    "CaseInput",
    "CaseStage",
    "ComponentOutputError",
    "RunContext",
    "json_dump",
]

log = get_logger(__name__)

STAGE_ORDER = {"generate": 0, "reduce": 1, "parse": 2, "score": 3, "judge": 4}

# The fields of the models every case builds, with a ``maker`` per model in the stage
# modules, each from the fields its call site always passes (see ``maker``): several per
# case, so a generic ``model_construct`` was a fifth of a case.
_CASE = ("run_id", "case_id", "dataset_id", "case_key")
_CONTEXT = ("run_id", "dataset_id", "case_key", "metadata", "case_id")
_RESULT = ("candidate_id", "result", "result_blob_ref", "cache_hit", "source_run_id")
# What every score context is built from (a judge's context adds its own fields).
_SCORE_CONTEXT = (
    "run_id",
    "dataset_id",
    "case_key",
    "metadata",
    "case",
    "parsed_output",
    "seed",
    "dataset_metadata",
)


class ComponentOutputError(TypeError):
    """A component returned something other than what its protocol promises."""


def _wrong_type(component: Any, method: str, expected: str, got: Any) -> ComponentOutputError:
    return ComponentOutputError(
        f"{component.component_id}.{method}() returned {type(got).__name__} "
        f"({_preview(got)}); expected {expected}"
    )


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _error_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@dataclass
class RunContext:
    """Everything the case pipelines of one execution share."""

    snapshot: RunSnapshot
    components: CompiledComponents
    store: RunStore
    runtime: RuntimeConfig
    limits: RunLimits
    writer: EventWriter
    observers: Observers
    until_stage: str
    workflow_runner: Any = None
    cache_enabled: bool = False
    read_cache: bool = True
    allow_generate: bool = True
    # A replay recomputes only these metrics (§5.10); None means every metric may run.
    only_metrics: frozenset[str] | None = None
    seeds: list[int] = field(default_factory=list)


@dataclass(slots=True)
class CaseInput:
    dataset: Dataset
    case: Case
    case_key: str
    prior: CaseExecutionState | None
    # The case's content hash, computed once for the cache keys of all its stages.
    case_hash: str | None = None
    # The fields every event of the case carries, built once for all of them.
    fields: dict[str, Any] | None = None
    # Set when this run's reduction event carried its output inline: the parse payload of
    # the pass-through parser, which holds only that output, is then known to fit too.
    reduced_inline: bool = False
    # A candidate generated in this run: its id, the bound ``_units`` gave its payload (-1
    # when none held) and its dump, which the pass-through reduction of it builds on.
    generated: tuple[str, int, dict[str, Any]] | None = None

    def hash_of_case(self) -> str:
        if self.case_hash is None:
            self.case_hash = self.case.compute_hash()
        return self.case_hash


class CaseStage:
    """The run state and the helpers that every stage of a case's pipeline uses.

    ``CasePipeline`` sets the attributes; each stage's method group is a subclass of this
    one, and ``CasePipeline`` inherits them all.
    """

    ctx: RunContext
    run_id: str
    inline_limit: int
    tracing: bool
    _cache_reader: CacheReader

    def case_fields(self, item: CaseInput) -> dict[str, Any]:
        """The run and case ids of the case's events (shared: never change the dict)."""
        fields = item.fields
        if fields is None:
            fields = item.fields = {
                "run_id": self.run_id,
                "case_id": item.case.case_id,
                "dataset_id": item.dataset.dataset_id,
                "case_key": item.case_key,
            }
        return fields

    def payload(self, data: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """The payload inline, or a blob ref when its JSON exceeds the inline limit."""
        inline, ref, _ = self.sized_payload(data)
        return inline, ref

    def _measured(self, data: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        encoded = canonical_json(data).encode("utf-8")
        if len(encoded) <= self.inline_limit:
            return data, None
        return None, self.ctx.writer.add_blob(encoded, "application/json")

    def sized_payload(
        self, data: dict[str, Any], units: int | None = None
    ) -> tuple[dict[str, Any] | None, str | None, int]:
        """``payload(data)`` and the bound ``_units`` gave its size (-1 if none held);
        ``units`` is that bound when the caller has it already."""
        if units is None:
            units = _units(data, self.inline_limit)
        if units >= 0:
            return data, None, units
        inline, ref = self._measured(data)
        return inline, ref, -1

    def span_attrs(self, item: CaseInput, **extra: Any) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "case_id": item.case.case_id,
            "dataset_id": item.dataset.dataset_id,
            "case_key": item.case_key,
        }
        attrs.update({k: v for k, v in extra.items() if v is not None})
        return attrs

    async def cache_read(self, stage: str, key: str) -> Any:
        """The payload cached under ``key``, or None; a failing cache read counts as a miss."""
        if not self.ctx.read_cache:
            return None
        try:
            return await self._cache_reader.load(stage, key)
        except Exception as exc:
            log.warning("stage_cache.read_failed", stage=stage, error=str(exc))
            return None


def json_dump(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json")`` straight from its serializer.

    ``model_dump``'s own keyword handling cost more than serializing a small output (a
    score: 2.4 against 0.5 us), and each case dumps several.
    """
    dump: dict[str, Any] = model.__pydantic_serializer__.to_python(model, mode="json")
    return dump


# The most bytes one character of a string can take in canonical JSON: ensure_ascii writes
# a character outside the BMP as a surrogate pair of "\uXXXX" escapes.
_WORST_BYTES_PER_CHAR = 12
# Numbers below this in magnitude take at most 26 bytes (a float's repr, an int's digits).
_BIG = 10**20


def _units(data: Any, limit: int) -> int:
    """An upper bound of ``data``'s canonical JSON size in worst-case-character units (12
    bytes, see ``_bound``) when that proves it fits ``limit`` bytes, else -1.

    Judged cheaply: each string character counts at its worst case, so a string-heavy
    payload near the limit takes the exact encoding instead; payloads are usually far
    below it.
    """
    if type(data) is not dict:
        budget = limit // _WORST_BYTES_PER_CHAR
        left = _bound(data, budget)
        return budget - left if left >= 0 else -1
    # The usual payload, a model's dump, in one pass: bytes are counted in units of the
    # worst case of a character, so one number is compared with the budget.
    budget = limit // _WORST_BYTES_PER_CHAR
    used = 1
    for key, value in data.items():
        kind = type(value)
        if kind is str:
            used += len(key) + len(value) + 1
        elif value is None or kind is bool or kind is float:
            used += len(key) + 3
        elif kind is int and -_BIG < value < _BIG:
            used += len(key) + 3
        else:
            left = _bound(value, budget - used - len(key) - 1)
            if left < 0:
                return -1
            used = budget - left
    return used if used <= budget else -1


# What ``_units`` counts for a ``GenerationResult``'s dump apart from its id's and its
# output's characters: the braces, each key, the id's quotes, and the three units of each
# of its other fields (scalar or null) but the output.
_GENERATION_KEYS = tuple(GenerationResult.model_fields)
_GENERATION_FIXED = 1 + sum(map(len, _GENERATION_KEYS)) + 1 + (len(_GENERATION_KEYS) - 2) * 3


def generation_units(data: dict[str, Any], limit: int) -> int:
    """``_units(data, limit)`` for the dump of a ``GenerationResult`` (of that exact class),
    its usual shape (a scalar output, nothing else set but the latency) counted at once."""
    output = data["final_output"]
    kind = type(output)
    latency = data["latency_ms"]
    candidate_id = data["candidate_id"]
    if (
        len(data) != 7
        or data["trace"] is not None
        or data["conversation"] is not None
        or data["artifacts"] is not None
        or data["token_usage"] is not None
        or type(candidate_id) is not str
        or (latency is not None and type(latency) is not float)
    ):
        return _units(data, limit)
    if kind is str:
        used = _GENERATION_FIXED + len(candidate_id) + len(output) + 1
    elif output is None or kind is bool or kind is float or (kind is int and -_BIG < output < _BIG):
        used = _GENERATION_FIXED + len(candidate_id) + 3
    else:
        return _units(data, limit)
    return used if used <= limit // _WORST_BYTES_PER_CHAR else -1


def _bound(data: Any, budget: int) -> int:
    """``budget`` less an upper bound of ``data``'s JSON size, in worst-case-character
    units (12 bytes: anything but a string's characters takes at most that per unit);
    negative when it does not fit."""
    stack = [data]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str:
            budget -= len(value) + 1
        elif kind is dict:
            budget -= 1
            for key, item in value.items():
                budget -= len(key) + 1
                stack.append(item)
        elif kind is list:
            budget -= 1
            stack.extend(value)
        elif value is None or kind is bool or kind is float:
            budget -= 3
        elif kind is int:
            budget -= 3 if -_BIG < value < _BIG else len(str(value)) // 12 + 3
        else:  # not JSON-mode data (a tuple, a subclass): let the exact encoding decide
            return -1
        if budget < 0:
            return -1
    return budget
