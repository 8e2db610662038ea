"""The glibc calls through ctypes really reach glibc here (Linux): writeback starts, arenas cap,
the mmap threshold stays put."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from salesflow import libc

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="sync_file_range, mallopt and mallinfo2 are Linux (glibc)",
)

#: Threads that each allocate a large buffer (malloc, not pymalloc), then glibc's per-arena
#: report; run in a fresh interpreter so the test process's own arenas do not count.
_ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from salesflow import libc
    if sys.argv[1] != "0":
        assert libc.limit_malloc_arenas(int(sys.argv[1]))
    held = []
    barrier = threading.Barrier(6)
    def work():
        held.append(bytearray(1 << 20))
        barrier.wait()  # all six alive at once: none can inherit a finished thread's arena
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads: t.start()
    for t in threads: t.join()
    ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
    """
)


def _arenas(limit: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS, str(limit)], capture_output=True, text=True, check=True
    )
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_malloc_arenas_are_capped() -> None:
    assert _arenas(0) > 2  # glibc's default: a new arena per new thread
    assert _arenas(2) == 2


#: A 4 MiB buffer freed, then a 3 MiB one held: is it in a memory map of its own? glibc's
#: mallinfo2 counts mmapped bytes (hblkhd); run in a fresh interpreter, as above.
_MAPPED = textwrap.dedent(
    """
    import ctypes, sys
    from salesflow import libc
    if sys.argv[1] != "0":
        assert libc.fix_mmap_threshold(int(sys.argv[1]))
    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = Info
    before = mallinfo2().hblkhd
    freed = bytearray(4 << 20)
    del freed
    held = bytearray(3 << 20)
    print((mallinfo2().hblkhd - before) >= (3 << 20))
    """
)


def _mapped(threshold: int) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", _MAPPED, str(threshold)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip() == "True"


def test_mmap_threshold_stays_where_it_is_set() -> None:
    # glibc's default: freeing the 4 MiB map raised the threshold, so 3 MiB comes from the heap.
    assert not _mapped(0)
    assert _mapped(2 << 20)


def test_start_writeback_reaches_the_kernel(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with path.open("wb") as f:
        f.write(b"y" * 100_000)
        f.flush()
        assert libc.start_writeback(f.fileno(), 0, 100_000)
        assert not libc.start_writeback(-1, 0, 100_000)  # a bad descriptor is refused, not ignored
