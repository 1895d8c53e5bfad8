"""Dispatch to lifecycle subscribers and the tracing provider; their errors never escape."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from themis.core.events import RunEvent
from themis.core.logs import get_logger

__all__ = ["HOOK_NAMES", "Observers"]

log = get_logger(__name__)

HOOK_NAMES = (
    "before_run",
    "after_run",
    "before_generate",
    "after_generate",
    "before_select",
    "after_select",
    "before_reduce",
    "after_reduce",
    "before_parse",
    "after_parse",
    "before_score",
    "after_score",
    "before_judge",
    "after_judge",
    "on_event",
)


class Observers:
    """The subscribers' hooks, looked up once per run, and the tracing provider."""

    def __init__(self, subscribers: Sequence[Any], tracer: Any) -> None:
        self._hooks: dict[str, list[Callable[..., Any]]] = {}
        for subscriber in subscribers:
            for name in HOOK_NAMES:
                hook = getattr(subscriber, name, None)
                if callable(hook):
                    self._hooks.setdefault(name, []).append(hook)
        # The names of the hooks some subscriber has: ``name in hooks`` is ``has(name)``
        # without a call, for the stages that ask it several times per case.
        self.hooks: frozenset[str] = frozenset(self._hooks)
        self.has_on_event = "on_event" in self._hooks
        self.tracer = None if _is_noop(tracer) else tracer
        self._record_exception = getattr(self.tracer, "record_exception", None)
        self._set_attributes = getattr(self.tracer, "set_attributes", None)

    def has(self, name: str) -> bool:
        return name in self._hooks

    async def call(self, name: str, *args: Any) -> None:
        for hook in self._hooks.get(name, ()):
            try:
                result = hook(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.warning("observer.error", hook=name, error=f"{type(exc).__name__}: {exc}")

    async def on_event(self, event: RunEvent) -> None:
        await self.call("on_event", event)

    # Tracing: every call is guarded, a failing provider is logged and ignored.
    def start_span(self, name: str, attributes: dict[str, Any]) -> Any:
        if self.tracer is None:
            return None
        clean = {k: v for k, v in attributes.items() if isinstance(v, (str, int, float, bool))}
        try:
            return self.tracer.start_span(name, clean)
        except Exception as exc:
            log.warning("tracing.error", operation="start_span", span=name, error=str(exc))
            return None

    def set_attributes(self, span: Any, attributes: dict[str, Any]) -> None:
        if span is None or self._set_attributes is None:
            return
        try:
            self._set_attributes(span, attributes)
        except Exception as exc:
            log.warning("tracing.error", operation="set_attributes", error=str(exc))

    def end_span(self, span: Any, status: str, exc: BaseException | None = None) -> None:
        if span is None or self.tracer is None:
            return
        try:
            if exc is not None and self._record_exception is not None:
                self._record_exception(span, exc)
            self.tracer.end_span(span, status)
        except Exception as error:
            log.warning("tracing.error", operation="end_span", error=str(error))

    def force_flush(self) -> None:
        flush = getattr(self.tracer, "force_flush", None)
        if flush is None:
            return
        try:
            flush()
        except Exception as exc:
            log.warning("tracing.error", operation="force_flush", error=str(exc))


def _is_noop(tracer: Any) -> bool:
    return tracer is None or getattr(tracer, "component_id", None) == "core/noop"
