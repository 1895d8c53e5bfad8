"""Prompt specifications: structured instructions rendered around a case input."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from themis.core.base import HashableModel, JSONValue

__all__ = ["PromptSpec", "render_prompt_spec"]


class PromptSpec(HashableModel):
    """Instructions, prefix, titled blocks and suffix that frame a prompt."""

    instructions: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    blocks: list[dict[str, JSONValue]] = Field(default_factory=list)

    def render_sections(self) -> list[str]:
        """The non-empty sections in order: instructions, prefix, blocks, suffix."""
        sections: list[str] = []
        if self.instructions:
            sections.append(f"Instructions:\n{self.instructions}")
        if self.prefix:
            sections.append(self.prefix)
        for number, block in enumerate(self.blocks, start=1):
            title = block.get("title")
            heading = title if isinstance(title, str) and title else f"Block {number}"
            rest = {k: v for k, v in block.items() if k != "title"}
            body = _block_body(rest)
            sections.append(f"{heading}:\n{body}" if body else f"{heading}:")
        if self.suffix:
            sections.append(self.suffix)
        return sections

    def is_empty(self) -> bool:
        return not (self.instructions or self.prefix or self.suffix or self.blocks)

    def render_input(self, value: Any) -> Any:
        """``value`` unchanged for an empty spec, else the sections plus an ``Input:`` section."""
        if self.is_empty():
            return value
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return "\n\n".join([*self.render_sections(), f"Input:\n{text}"])


def _block_body(rest: dict[str, Any]) -> str:
    if not rest:
        return ""
    if len(rest) == 1:
        (only,) = rest.values()
        if isinstance(only, str):
            return only
        return json.dumps(only, sort_keys=True)
    return json.dumps(rest, sort_keys=True)


def render_prompt_spec(spec: PromptSpec | None, body: str) -> str:
    """The spec's sections followed by ``body``, joined by blank lines."""
    parts = spec.render_sections() if spec is not None else []
    return "\n\n".join([*parts, body]) if body else "\n\n".join(parts)
