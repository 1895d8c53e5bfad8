"""The texts a SQLite store keeps at rest, compressed (schema version 4).

A run at rest keeps its fold state and its ``run_result`` (about 50 and 40 MB of JSON at
100,000 cases). Compressed at level 1 they are 14x smaller (3.6 and 3.0 MB) for about
0.3 s of CPU at 100,000 cases; level 6 is a fifth smaller again for three times the CPU.
The two large texts are encoded a few thousand cases at a time into the compressor, so
that neither their whole text nor the encoder's buffer of it is ever in memory: they are
written at the run's peak of memory. Decompressed, a stored text is byte for byte the JSON
an uncompressed encode gives (``model_dump_json(exclude_defaults=True)``,
``encode_fold_state``), but for the newlines the ``run_result`` text has between its
chunks of cases (whitespace to JSON), so that a reader can validate it a chunk at a time
(``themis.core._result_text``).

Rows written by earlier versions hold the JSON as TEXT; a row's SQLite type tells the two
apart (a BLOB is compressed), so both are read.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter
from themis.core._case_list import LEVEL as SEGMENT_LEVEL
from themis.core._case_list import WBITS as SEGMENT_WBITS
from themis.core._case_list import CaseList

if TYPE_CHECKING:
    from pydantic import BaseModel
    from themis.core.projections import ProjectionFolder

__all__ = [
    "compressed",
    "compressed_fold_state",
    "compressed_model",
    "stored_text",
]

# zlib's level 1: 14.5x smaller at 0.17 s per 50 MB; level 6: 17.8x at 0.6 s (measured on
# the fold state of a 100,000-case run). Decompressing either takes about 90 ms.
LEVEL = 1
# A raw deflate stream, without zlib's header and Adler-32 checksum: the checksum was a
# third of the instructions of reading a result back (a TEXT row had none either).
WBITS = -zlib.MAX_WBITS
# Items (cases) encoded at a time: a few hundred KB of JSON.
CHUNK = 2048
# The segments a folder keeps its finished cases in are spliced into these streams.
assert SEGMENT_WBITS == WBITS and SEGMENT_LEVEL == LEVEL


def compressed(text: str | bytes) -> bytes:
    """``text`` (UTF-8) compressed as it is stored: a raw deflate stream."""
    out = _Deflater()
    out.write(text.encode() if isinstance(text, str) else text)
    return out.finish()


def stored_text(value: str | bytes) -> str | bytes:
    """The JSON a stored value holds: a BLOB decompressed, a TEXT (earlier versions) as is.

    Raises ``zlib.error`` when a BLOB is not a compressed text.
    """
    if isinstance(value, bytes):
        return zlib.decompress(value, WBITS)
    return value


class _Deflater:
    """Compressed output gathered as the text is written, piece by piece."""

    __slots__ = ("_compressor", "_pieces")

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, WBITS)
        self._pieces: list[bytes] = []

    def write(self, data: bytes) -> None:
        piece = self._compressor.compress(data)
        if piece:
            self._pieces.append(piece)

    def splice(self, segment: bytes) -> None:
        """Put ``segment`` (compressed elsewhere as a segment, ``_case_list.segment``) in
        the stream here: what was written is flushed to a byte boundary first, and what
        follows starts a stream of its own, which cannot refer back across the segment."""
        self._pieces.append(self._compressor.flush(zlib.Z_SYNC_FLUSH))
        self._pieces.append(segment)
        self._compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, WBITS)

    def finish(self) -> bytes:
        self._pieces.append(self._compressor.flush())
        data = b"".join(self._pieces)
        self._pieces = []
        return data


class _Unstreamable(Exception):
    """The model's JSON is not laid out as ``_write_model`` expects: encode it whole."""


def compressed_model(model: BaseModel, field: str, *, lines: bool = False) -> bytes:
    """``model.model_dump_json(exclude_defaults=True)`` compressed, its ``field`` (a list or
    dict, the model's last field) encoded ``CHUNK`` items at a time.

    With ``lines``, each chunk of items is on a line of its own, between the line that
    opens the field and the line that closes the model (``"]}"``): JSON whitespace, which
    every reader skips, and which lets a reader validate the items a chunk at a time
    (``themis.core._result_text``). A raw newline is never inside a JSON string.
    """
    out = _Deflater()
    try:
        _write_model(out, model, field, lines=lines)
    except _Unstreamable:
        return compressed(model.model_dump_json(exclude_defaults=True))
    return out.finish()


def compressed_fold_state(folder: ProjectionFolder) -> bytes | None:
    """``encode_fold_state(folder)`` compressed, the state's cases encoded ``CHUNK`` at a time.

    The cases the folder let go of once finished (``ProjectionFolder.compress_finished``)
    are written as the compressed segments it keeps them in, before the others. Should the
    state's JSON not be laid out as ``_write_model`` expects, it is encoded whole.
    """
    from themis.core._fold_state import fold_state_head

    head = fold_state_head(folder)
    if head is None:
        return None
    prefix, state = head
    finished = folder._finished
    segments = finished.state_segments if finished is not None else ()
    out = _Deflater()
    out.write(prefix.encode())
    try:
        _write_model(out, state, "case_states", segments=segments)
    except _Unstreamable:
        return _whole_fold_state(folder)
    out.write(b"}")
    return out.finish()


def _whole_fold_state(folder: ProjectionFolder) -> bytes | None:
    from themis.core._fold_state import encode_fold_state

    text = encode_fold_state(folder)
    return None if text is None else compressed(text)


def _write_model(
    out: _Deflater,
    model: BaseModel,
    field: str,
    *,
    lines: bool = False,
    segments: Sequence[bytes] = (),
) -> None:
    """Write ``model.model_dump_json(exclude_defaults=True)``, its last field ``field`` in
    chunks (each on a line of its own with ``lines``); raise ``_Unstreamable`` when that
    would not give the same JSON (then what was written is of no use).

    ``segments`` (``_case_list.segment``) hold the JSON of more items of ``field``, to be
    put before the model's own. A ``CaseList`` that is not loaded yet is written as its
    segments and the models after them, and stays unloaded.
    """
    cls = type(model)
    fields = cls.model_fields
    value: Any = model.__dict__.get(field)
    if type(value) is CaseList and value.compressed is not None:
        own, _, value = value.compressed
        segments = (*segments, *own)
    if (
        not (value or segments)
        or next(reversed(fields)) != field
        or cls.model_computed_fields
        or fields[field].serialization_alias is not None
        or fields[field].alias is not None
        or not isinstance(value, list | dict)
    ):
        raise _Unstreamable
    open_, close = (b"[", b"]") if isinstance(value, list) else (b"{", b"}")
    prefix = b"{" + json.dumps(field).encode() + b":" + open_
    suffix = close + b"}"
    pieces = _chunks(value)
    encode = _chunk_encoder(model, field, value, prefix, suffix)
    # The first chunk is encoded before anything is written: it proves the layout.
    first = encode(next(pieces)) if value else None
    head = model.model_dump_json(exclude={field}, exclude_defaults=True).encode()
    if not head.endswith(b"}"):
        raise _Unstreamable
    newline = b"\n" if lines else b""
    out.write(head[:-1] + (b"," if head != b"{}" else b"") + prefix[1:] + newline)
    for at, segment in enumerate(segments):
        if at:
            out.write(b"," + newline)
        out.splice(segment)
    if first is not None:
        if segments:
            out.write(b"," + newline)
        out.write(first)
        del first
        for chunk in pieces:
            out.write(b"," + newline)
            out.write(encode(chunk))
    out.write(newline + suffix)


def _chunks(value: list[Any] | dict[Any, Any], size: int | None = None) -> Any:
    if size is None:
        size = CHUNK  # read here, not bound at definition: tests make it smaller
    if isinstance(value, list):
        for start in range(0, len(value), size):
            yield value[start : start + size]
        return
    items = iter(value.items())
    while chunk := dict(islice(items, size)):
        yield chunk


def _chunk_encoder(
    model: BaseModel, field: str, value: Any, prefix: bytes, suffix: bytes
) -> Callable[[Any], bytes]:
    """How to encode ``field``'s chunks: as the model does (``_field_json``), or, where a
    model-level serializer makes that slow, by an adapter of the field's type.

    Behind a ``model_serializer`` (``RunResult``'s loads its compressed cases first),
    pydantic-core builds the whole dump as Python values and then encodes those: 1.7x the
    time of encoding the field's items straight (a run's result at rest). The adapter is
    used only where it writes the chunk's first item exactly as the model does.
    """

    def by_model(chunk: Any) -> bytes:
        return _field_json(model, field, chunk, prefix, suffix)

    cls = type(model)
    if not value or not cls.__pydantic_decorators__.model_serializers:
        return by_model
    adapter = _field_adapter(cls, field)
    if adapter is None:
        return by_model

    def by_adapter(chunk: Any) -> bytes:
        return adapter.dump_json(chunk, exclude_defaults=True)[1:-1]

    one = next(_chunks(value, 1))
    return by_adapter if by_adapter(one) == by_model(one) else by_model


@functools.cache
def _field_adapter(cls: type[BaseModel], field: str) -> TypeAdapter[Any] | None:
    annotation = cls.model_fields[field].annotation
    if annotation is None:
        return None
    try:
        return TypeAdapter(annotation)
    except Exception:  # a type an adapter cannot take on its own: the model's way, then
        return None


def _field_json(model: BaseModel, field: str, chunk: Any, prefix: bytes, suffix: bytes) -> bytes:
    """The JSON of ``chunk``'s items as they appear in the model's ``field``, without the
    brackets around them."""
    piece = (
        model.model_copy(update={field: chunk})
        .model_dump_json(include={field}, exclude_defaults=True)
        .encode()
    )
    if not (piece.startswith(prefix) and piece.endswith(suffix)):
        raise _Unstreamable
    return piece[len(prefix) : -len(suffix)]
