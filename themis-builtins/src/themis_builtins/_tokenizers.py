"""BLEU tokenizers: ``13a`` (the WMT mteval-v13a rules), ``none`` and ``char``.

Each takes one segment and returns its tokens. Segments are right-stripped first, as
mteval and sacrebleu do, so trailing whitespace and newlines never produce tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["TOKENIZERS", "tokenize_13a", "tokenize_char", "tokenize_none"]

Tokenizer = Callable[[str], list[str]]

# mteval-v13a separates every ASCII symbol except the apostrophe, the hyphen, the period and
# the comma; those last three are handled by the context rules below.
_SYMBOLS = (
    "".join(
        chr(code)
        for low, high in ((0x20, 0x26), (0x28, 0x2B), (0x2F, 0x2F), (0x3A, 0x40), (0x5B, 0x60))
        for code in range(low, high + 1)
    )
    + "{|}~"
)
_SPACE_OUT_SYMBOLS = str.maketrans({symbol: f" {symbol} " for symbol in _SYMBOLS})

# Periods and commas split off unless they sit inside a number ("3.14", "1,000").
# Each rule is applied once, left to right, without overlapping matches (like Perl's s///g).
_AFTER_NON_DIGIT = re.compile(r"([^0-9])([.,])")
_BEFORE_NON_DIGIT = re.compile(r"([.,])([^0-9])")
# A hyphen right after a digit is a range or minus sign, not part of a word ("1990-2000").
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")

_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def tokenize_13a(segment: str) -> list[str]:
    """Tokens by the mteval-v13a rules used for WMT BLEU."""
    line = segment.rstrip()
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in _ENTITIES:
            line = line.replace(entity, char)
    line = f" {line} ".translate(_SPACE_OUT_SYMBOLS)
    line = _AFTER_NON_DIGIT.sub(r"\1 \2 ", line)
    line = _BEFORE_NON_DIGIT.sub(r" \1 \2", line)
    line = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", line)
    return line.split()


def tokenize_none(segment: str) -> list[str]:
    """Whitespace-separated tokens, nothing else."""
    return segment.split()


def tokenize_char(segment: str) -> list[str]:
    """Every non-whitespace character is a token."""
    return [char for char in segment.rstrip() if not char.isspace()]


TOKENIZERS: dict[str, Tokenizer] = {
    "13a": tokenize_13a,
    "none": tokenize_none,
    "char": tokenize_char,
}
