"""``RunResult.cases`` of a run whose finished cases a folder keeps compressed.

A SQLite run of 100,000 cases would hold 100,000 ``CaseResult`` models (about 1 KB each)
to hand back a result its caller may only read the progress of. ``CaseList`` is that
list before it is read: the compressed JSON of the cases the folder let go of
(``themis.core._finished``) and the models of the rest. The first use of it as a list
validates the text back into models, once, and from then on it is the list it stands
for. ``len`` needs no models.

It is a ``list`` (``isinstance`` holds, and every list method works); what reads a
list's storage without calling its methods (pydantic-core's serializer and validator) is
pointed at ``load`` by ``RunResult``'s field serializer and validator.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from themis.core.results import CaseResult

__all__ = ["CaseList", "own_cases", "segment", "segment_text"]

_LOADING = threading.Lock()

# Each segment is a raw deflate stream of its own, ended by a sync flush: no header, no
# checksum, no final block, so that segments laid one after another (and a final one)
# are a single stream, which is how a store keeps them at rest (``_at_rest``).
WBITS = -zlib.MAX_WBITS
LEVEL = 1


def segment(data: bytes) -> bytes:
    """``data`` compressed as a segment: a stream that more segments may follow."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def segment_text(data: bytes) -> bytes:
    """The bytes a segment holds."""
    return zlib.decompressobj(WBITS).decompress(data)


@cache
def _cases() -> TypeAdapter[list[CaseResult]]:
    from pydantic import TypeAdapter

    from themis.core.results import CaseResult

    return TypeAdapter(list[CaseResult])


def validate_segments(segments: Sequence[bytes]) -> list[CaseResult]:
    """The cases of ``segments``, each the JSON of some cases without the brackets."""
    from themis.core._fold_speed import paused_gc

    validate = _cases().validate_json
    cases: list[CaseResult] = []
    with paused_gc():
        for data in segments:
            cases.extend(validate(b"[" + segment_text(data) + b"]"))
    return cases


class CaseList(list):  # type: ignore[type-arg]
    """The cases of ``segments`` (compressed, in order) followed by ``rest``, made models on
    first use; or, made by ``from_loader``, the ``size`` cases a loader returns."""

    __slots__ = ("_loader", "_rest", "_segments", "_size")

    def __init__(self, segments: Sequence[bytes], size: int, rest: list[CaseResult]) -> None:
        super().__init__()
        self._segments: tuple[bytes, ...] | None = tuple(segments)
        self._size = size
        self._rest: list[CaseResult] | None = rest
        self._loader: Callable[[], list[CaseResult]] | None = None

    @classmethod
    def from_loader(cls, loader: Callable[[], list[CaseResult]], size: int) -> CaseList:
        """The ``size`` cases ``loader`` returns when the list is first used: a loader that
        returns another number of cases raises ``ValueError`` then."""
        cases = cls((), size, [])
        cases._loader = loader
        return cases

    @property
    def loaded(self) -> bool:
        """Whether the cases are models yet."""
        return self._segments is None

    @property
    def compressed(self) -> tuple[tuple[bytes, ...], int, list[CaseResult]] | None:
        """(the segments, how many cases they hold, the models after them) before
        ``load``; None after it."""
        if self._segments is None or self._rest is None or self._loader is not None:
            return None
        return self._segments, self._size, self._rest

    def load(self) -> None:
        """Make the cases models, once; raises ``pydantic.ValidationError`` (and stays
        unloaded) should a segment not hold valid cases."""
        if self._segments is None:
            return
        with _LOADING:  # two threads loading one list would each add its cases
            segments = self._segments
            if segments is None:
                return
            if self._loader is not None:
                cases = self._loader()
                if len(cases) != self._size:
                    raise ValueError(
                        f"the cases read back are {len(cases)}, not the {self._size} "
                        "their result counts"
                    )
            else:
                cases = validate_segments(segments)
                cases += self._rest or ()
            list.extend(self, cases)
            self._segments = None
            self._rest = None
            self._loader = None

    def __len__(self) -> int:
        if self._segments is not None:
            return self._size + len(self._rest or ())
        return list.__len__(self)

    def __eq__(self, other: object) -> bool:
        # Lists of other lengths differ: no need to load (a dump that leaves out fields at
        # their defaults compares the list with ``[]``).
        if isinstance(other, list) and len(other) != len(self):
            return False
        self.load()
        if type(other) is CaseList:
            other.load()
        return list.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __repr__(self) -> str:
        self.load()
        return list.__repr__(self)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # Pickled (and copied) as the plain list it stands for.
        self.load()
        return (list, (list(list.__iter__(self)),))

    def __copy__(self) -> list[CaseResult]:
        self.load()
        return list(list.__iter__(self))

    def __deepcopy__(self, memo: dict[int, Any]) -> list[CaseResult]:
        from copy import deepcopy

        self.load()
        return [deepcopy(case, memo) for case in list.__iter__(self)]


def _loading(name: str) -> Callable[..., Any]:
    method = getattr(list, name)

    def call(self: CaseList, *args: Any) -> Any:
        if self._segments is not None:
            self.load()
        for arg in args:  # another one compared or added reads as the list it stands for
            if type(arg) is CaseList:
                arg.load()
        return method(self, *args)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


# Every other way in to the list's items: ``load`` first, then the list's own method.
for _name in (
    "__iter__",
    "__reversed__",
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__contains__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__add__",
    "__iadd__",
    "__mul__",
    "__rmul__",
    "__imul__",
    "__sizeof__",
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "index",
    "count",
    "copy",
    "sort",
    "reverse",
):
    setattr(CaseList, _name, _loading(_name))


def _radd(self: CaseList, other: Any) -> Any:
    # ``[...] + cases`` would read the list's storage directly: this runs first (Python
    # tries a subclass's reflected method before the base's own).
    self.load()
    if isinstance(other, list):
        return other + list(list.__iter__(self))
    return NotImplemented


CaseList.__radd__ = _radd  # type: ignore[attr-defined]


def own_cases(cases: list[CaseResult]) -> list[CaseResult]:
    """A list of ``cases`` of the caller's own: a ``CaseList`` not loaded yet stays one
    (sharing its immutable segments and the models after them), anything else is copied."""
    if type(cases) is CaseList and not cases.loaded:
        loader = cases._loader
        if loader is not None:
            return CaseList.from_loader(loader, cases._size)
        parts = cases.compressed
        if parts is not None:
            segments, size, rest = parts
            return CaseList(segments, size, list(rest))
    return list(cases)
