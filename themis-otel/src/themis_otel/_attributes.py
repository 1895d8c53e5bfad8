"""Map Themis span attributes to OpenTelemetry ones: ``themis.<key>`` plus GenAI conventions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum

from opentelemetry.util.types import AttributeValue

__all__ = [
    "GENAI_SPANS",
    "genai_attributes",
    "genai_usage_attributes",
    "themis_attributes",
    "to_attribute_value",
]

# Stringified values are capped so one odd value cannot bloat every exported batch.
_MAX_STRING = 4096
# OTLP carries integers as int64; anything wider would fail the whole export.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# Only these stages call a model (a generator, or a judge workflow's judge models).
GENAI_SPANS: Mapping[str, str] = {
    "generation": "generate_content",
    "judge": "invoke_workflow",
}


def _primitive(value: object) -> str | bool | int | float | None:
    """The value as an OTLP scalar, or ``None`` when it is not one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        # A StrEnum stays readable as its value rather than its repr.
        return value.value if isinstance(value, Enum) else str(value)
    return None


def _stringify(value: object) -> str | None:
    """A bounded string form of an arbitrary value, or ``None`` when even that fails."""
    try:
        if isinstance(value, Enum):
            text = str(value.value)
        elif isinstance(value, bytes):
            text = value.decode("utf-8", errors="replace")
        elif isinstance(value, Mapping | list | tuple | set | frozenset):
            text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
        else:
            text = str(value)
    except Exception:  # a hostile __str__ must not break tracing
        return None
    return text if len(text) <= _MAX_STRING else text[:_MAX_STRING] + "…"


def to_attribute_value(value: object) -> AttributeValue | None:
    """A value OTel accepts: scalars as is, homogeneous lists as tuples, the rest as text."""
    if value is None:
        return None
    scalar = _primitive(value)
    if scalar is not None:
        return scalar
    if isinstance(value, list | tuple) and value:
        items = [_primitive(item) for item in value]
        kinds = {type(item) for item in items}
        if None not in items and len(kinds) == 1:
            return tuple(items)
    return _stringify(value)


# "case_id" -> "themis.case_id". The runtime uses a dozen keys; the bound only keeps odd
# callers from growing it without end. Only str keys: 1 and True would share an entry.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 1024


def _themis_name(key: object) -> str:
    """``themis.<key>``, or ``""`` for a key that names nothing."""
    text = str(key)
    name = f"themis.{text}" if text else ""
    if name and type(key) is str and len(_NAMES) < _MAX_NAMES:
        _NAMES[key] = name
    return name


def themis_attributes(attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    """Each usable attribute under ``themis.<key>``; ``None`` and unconvertible values dropped."""
    mapped: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        # Two spans per case carry these: plain scalars skip the general conversion.
        converted: AttributeValue | None
        if type(value) is str or type(value) is float or type(value) is bool:
            converted = value
        elif type(value) is int:
            converted = value if _INT64_MIN <= value <= _INT64_MAX else str(value)
        else:
            converted = to_attribute_value(value)
            if converted is None:
                continue
        name = _NAMES.get(key) or _themis_name(key)
        if name:
            mapped[name] = converted
    return mapped


def genai_attributes(stage: str, attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    """The GenAI semantic-convention keys a model-calling stage span should carry."""
    operation = GENAI_SPANS.get(stage)
    if operation is None:
        return {}
    mapped: dict[str, AttributeValue] = {"gen_ai.operation.name": operation}
    model_id = attributes.get("model_id")
    if isinstance(model_id, str) and model_id:
        mapped["gen_ai.request.model"] = model_id
    provider_key = attributes.get("provider_key")
    if isinstance(provider_key, str) and provider_key:
        # gen_ai.system is the older name; backends still read either one.
        mapped["gen_ai.provider.name"] = provider_key
        mapped["gen_ai.system"] = provider_key
    seed = attributes.get("seed")
    if stage == "generation" and isinstance(seed, int) and not isinstance(seed, bool):
        if _INT64_MIN <= seed <= _INT64_MAX:
            mapped["gen_ai.request.seed"] = seed
    metric_id = attributes.get("metric_id")
    if stage == "judge" and isinstance(metric_id, str) and metric_id:
        mapped["gen_ai.workflow.name"] = metric_id
    return mapped


def genai_usage_attributes(attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    """Token counts under ``gen_ai.usage.*``; non-integers are ignored."""
    mapped: dict[str, AttributeValue] = {}
    for key in ("input_tokens", "output_tokens"):
        value = attributes.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            mapped[f"gen_ai.usage.{key}"] = value
    return mapped
