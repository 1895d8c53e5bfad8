"""``text_of``: the one rule every builtin uses to read text out of a JSON value."""

from __future__ import annotations

from typing import Any

from themis.core.base import canonical_json

__all__ = ["text_of", "text_or_empty"]

# The dict keys a model's answer is most often wrapped in, in the order they are tried.
_TEXT_KEYS = ("answer", "text", "output", "content")


def text_of(value: Any) -> str:
    """A str as is; a dict's first string among answer/text/output/content; else canonical JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in _TEXT_KEYS:
            inner = value.get(key)
            if isinstance(inner, str):
                return inner
    return canonical_json(value)


def text_or_empty(value: Any) -> str:
    """``text_of(value)``, except that a missing value (``None``) reads as empty text."""
    return "" if value is None else text_of(value)
