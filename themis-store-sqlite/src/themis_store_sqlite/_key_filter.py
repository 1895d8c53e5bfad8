"""What a store knows is not in its stage cache, so that a run's misses skip the database."""

from __future__ import annotations

__all__ = ["SEED_LIMIT", "KeyFilter"]

# A filter of 2**24 bits (2 MiB) with two bits a key: at 200,000 keys (a 100,000-case run's
# generate and score entries) about 0.2% of the absent keys still go to the database, at
# 1,000,000 keys 1.4%. A wrong "maybe" costs one read, never a wrong answer.
_BITS = 1 << 24
_MASK = _BITS - 1
# A cache with more rows than this is not scanned into a filter: its lookups read the
# database, as they did before there was one (a scan costs about 1 us a row).
SEED_LIMIT = 1 << 18


class KeyFilter:
    """A Bloom filter of the ``(stage, key)`` pairs in the ``stage_cache`` table.

    ``may_contain`` is False only for a pair that was never added, so a lookup it answers
    False for is a certain miss, read from no database. The filter is only as fresh as the
    writer connection's last check of ``PRAGMA data_version`` (``version``): a row another
    connection commits after that is not in it, so the store checks the version in each of
    its write transactions and drops the filter when it moved.
    """

    __slots__ = ("_bits", "version")

    def __init__(self, version: int) -> None:
        self._bits = bytearray(_BITS >> 3)
        self.version = version

    def add(self, stage: str, key: str) -> None:
        bits = self._bits
        code = hash((stage, key))
        first = code & _MASK
        second = (code >> 24) & _MASK
        bits[first >> 3] |= 1 << (first & 7)
        bits[second >> 3] |= 1 << (second & 7)

    def may_contain(self, stage: str, key: str) -> bool:
        bits = self._bits
        code = hash((stage, key))
        first = code & _MASK
        if not bits[first >> 3] & (1 << (first & 7)):
            return False
        second = (code >> 24) & _MASK
        return bool(bits[second >> 3] & (1 << (second & 7)))
