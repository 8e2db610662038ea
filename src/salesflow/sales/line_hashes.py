"""Duplicate-line detection for the upload preview, in bounded memory and pure Python."""

from __future__ import annotations

from array import array
from bisect import bisect_left

__all__ = ["LineHashes"]


class LineHashes:
    """The hashes of distinct lines seen, in ~9 bytes a line where a Python set of ints takes ~70:
    sorted runs of 8-byte ints (`array("q")`) behind a 1 MB bit filter, and a set of the newest that
    becomes a run when it fills. Pure Python on purpose: numpy would add ~20 MB to the upload
    service's memory for this alone.
    """

    #: Hashes collected in the set before they become a sorted run.
    RUN = 16_384
    #: Bits of the filter, indexed by a hash's low bits: a clear bit spares searching the runs
    #: (with 190k hashes, 16 MB of lines, ~98% of new lines are decided by it).
    FILTER_BITS = 1 << 23
    #: Blank lines are never duplicates.
    BLANK = frozenset({hash(""), hash("\r")})

    def __init__(self) -> None:
        self._runs: list[array[int]] = []
        self._in_runs = 0
        self._filter = bytearray(self.FILTER_BITS // 8)
        self._new: set[int] = set()

    def __len__(self) -> int:
        return self._in_runs + len(self._new)

    def add(self, lines: list[str]) -> int:
        """Remember the lines; how many repeated a line seen before (or earlier in `lines`)."""
        hashes = [value for value in map(hash, lines) if value not in self.BLANK]
        distinct = set(hashes) - self._new
        if self._runs:
            bits, mask = self._filter, self.FILTER_BITS - 1
            distinct -= {
                value
                for value in distinct
                if bits[(value & mask) >> 3] >> (value & 7) & 1 and self._in_a_run(value)
            }
        self._new |= distinct
        if len(self._new) >= self.RUN:
            self._seal()
        return len(hashes) - len(distinct)

    def _in_a_run(self, value: int) -> bool:
        """Whether a sorted run holds `value` (a binary search in C per run)."""
        for run in self._runs:
            at = bisect_left(run, value)
            if at < len(run) and run[at] == value:
                return True
        return False

    def _seal(self) -> None:
        """The newest hashes become a sorted run, their bits set in the filter."""
        bits, mask = self._filter, self.FILTER_BITS - 1
        for value in self._new:
            bits[(value & mask) >> 3] |= 1 << (value & 7)
        self._runs.append(array("q", sorted(self._new)))
        self._in_runs += len(self._new)
        self._new = set()
