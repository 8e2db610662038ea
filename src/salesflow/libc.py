"""The glibc calls Python's standard library does not wrap, through ctypes.

All are tuning, never correctness: where a call is missing (not Linux, not glibc) it does
nothing and says so by returning False.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

__all__ = ["fix_mmap_threshold", "limit_malloc_arenas", "start_writeback"]

_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h
_M_ARENA_MAX = -8  # malloc.h
_M_MMAP_THRESHOLD = -3  # malloc.h


def _function(name: str, argtypes: list[Any]) -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


_sync_file_range = _function(
    "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
)
_mallopt = _function("mallopt", [ctypes.c_int, ctypes.c_int])


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing `length` bytes of `fd` from `offset` to disk; no waiting.

    sync_file_range(SYNC_FILE_RANGE_WRITE): it makes nothing durable (fsync still does that), it
    only spares fsync the writing. A failure is reported again by the next fsync.
    """
    if _sync_file_range is None:
        return False
    return bool(_sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0)


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas (mallopt M_ARENA_MAX) for threads created from now on.

    glibc gives each new thread an arena of its own, up to 8 per core; memory freed into one
    arena is not reused by another, so a process whose threads take turns with large buffers
    holds more than it uses.
    """
    if _mallopt is None or arenas < 1:
        return False
    return bool(_mallopt(_M_ARENA_MAX, arenas) == 1)


def fix_mmap_threshold(size: int) -> bool:
    """Give every allocation of `size` bytes or more its own mmap, unmapped when freed
    (mallopt M_MMAP_THRESHOLD), and keep that threshold fixed.

    glibc's threshold starts at 128 KiB and rises to the largest mmapped buffer freed so far (up
    to 32 MiB): once one 8 MiB S3 part is freed, every smaller buffer comes from the heap, where
    freed memory mostly stays resident.
    """
    if _mallopt is None or size < 1:
        return False
    return bool(_mallopt(_M_MMAP_THRESHOLD, size) == 1)
