"""The builtin parsers: JSON identity, text, choice letters, math answers and code."""

from __future__ import annotations

import re
from typing import Any

from themis.core.contexts import ParseContext
from themis.core.models import ParsedOutput, ReducedCandidate

from themis_builtins._component import BuiltinComponent
from themis_builtins.text import text_of

__all__ = ["ChoiceLetter", "CodeText", "JsonIdentity", "MathAnswer", "TextParser"]


class JsonIdentity(BuiltinComponent):
    """Passes the reduced output through unchanged."""

    component_id = "builtin/json_identity"

    def parse(self, candidate: ReducedCandidate, ctx: ParseContext) -> ParsedOutput:
        """The output as is, with ``format="json"``."""
        return ParsedOutput(value=candidate.final_output, format="json")


class TextParser(BuiltinComponent):
    """Reads the output as text with ``text_of``."""

    component_id = "builtin/text"

    def parse(self, candidate: ReducedCandidate, ctx: ParseContext) -> ParsedOutput:
        """``text_of(output)``, with ``format="text"``."""
        return ParsedOutput(value=text_of(candidate.final_output), format="text")


# A letter A-J with no letter, digit or underscore on either side ("(B)", "B.", "is C").
_CHOICE = re.compile(r"(?<![A-Z0-9_])[A-J](?![A-Z0-9_])")


class ChoiceLetter(BuiltinComponent):
    """Extracts the last standalone multiple-choice letter A-J."""

    component_id = "builtin/choice_letter"

    def parse(self, candidate: ReducedCandidate, ctx: ParseContext) -> ParsedOutput:
        """The last standalone A-J of the upper-cased text; ``""`` marked invalid if none."""
        letters = _CHOICE.findall(text_of(candidate.final_output).upper())
        if not letters:
            return ParsedOutput(value="", format="choice_letter", metadata={"invalid": True})
        return ParsedOutput(value=letters[-1], format="choice_letter")


_BOXED = re.compile(r"\\boxed\s*\{")


class MathAnswer(BuiltinComponent):
    """Extracts the content of the last ``\\boxed{...}``, nested braces included."""

    component_id = "builtin/math_answer"

    def parse(self, candidate: ReducedCandidate, ctx: ParseContext) -> ParsedOutput:
        """The last balanced ``\\boxed{}`` content stripped, else the whole text stripped."""
        text = text_of(candidate.final_output)
        answer = last_boxed(text)
        value = answer if answer is not None else text
        return ParsedOutput(value=value.strip(), format="math_answer")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` whose braces balance, or ``None``."""
    for opening in reversed(list(_BOXED.finditer(text))):
        depth = 1
        for index in range(opening.end(), len(text)):
            char = text[index]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return text[opening.end() : index]
    return None


# Fences tagged with another language hold examples or output, not the answer's code.
_CODE_TAGS = frozenset({"", "python", "py", "cpp", "c++"})
_FENCE = "```"

_CODE_KEYS = ("solution", "code", "answer")


class CodeText(BuiltinComponent):
    """Extracts program text: the last fenced code block, else the stripped text."""

    component_id = "builtin/code_text"

    def parse(self, candidate: ReducedCandidate, ctx: ParseContext) -> ParsedOutput:
        """The body of the last python/c++/untagged fence, else the text, ``format="code"``."""
        text = _code_source(candidate.final_output)
        blocks = [body for tag, body in fenced_blocks(text) if tag in _CODE_TAGS]
        code = blocks[-1] if blocks else text
        return ParsedOutput(value=code.strip(), format="code")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every closed ```-fenced block as ``(lower-cased tag, body)``, in order."""
    blocks: list[tuple[str, str]] = []
    tag: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if tag is None:
            if stripped.startswith(_FENCE):
                words = stripped[len(_FENCE) :].split()
                tag = words[0].lower() if words else ""
                body = []
        elif stripped.startswith(_FENCE):
            blocks.append((tag, "\n".join(body)))
            tag = None
        elif stripped.endswith(_FENCE):
            # The closing fence sits at the end of the last code line.
            body.append(line.rstrip()[: -len(_FENCE)])
            blocks.append((tag, "\n".join(body)))
            tag = None
        else:
            body.append(line)
    return blocks


def _code_source(output: Any) -> str:
    """A dict's first non-empty string among solution/code/answer, else ``text_of``."""
    if isinstance(output, dict):
        for key in _CODE_KEYS:
            value = output.get(key)
            if isinstance(value, str) and value:
                return value
    return text_of(output)
