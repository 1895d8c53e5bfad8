"""Test kit for component and plugin authors: contract suites, fakes and a pytest plugin.

Names resolve lazily so that importing ``themis.testing`` does not import pytest-heavy
modules until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "FakeGenerator",
    "FakeJudge",
    "GeneratorContract",
    "JudgeModelContract",
    "MetricContract",
    "ParserContract",
    "RecordingSubscriber",
    "RecordingTracer",
    "RunStoreContract",
    "TracingProviderContract",
]

_HOMES = {
    "GeneratorContract": "_components",
    "ParserContract": "_components",
    "MetricContract": "_components",
    "JudgeModelContract": "_components",
    "FakeGenerator": "_fakes",
    "FakeJudge": "_fakes",
    "RecordingSubscriber": "_fakes",
    "RecordingTracer": "_fakes",
    "RunStoreContract": "_stores",
    "TracingProviderContract": "_tracing",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'themis.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"themis.testing.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
