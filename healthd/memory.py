"""The daemon's terms with the C library's allocator (glibc): freed memory goes back to the
operating system instead of staying with the process.

* ``give_back``, after a scrape and at a settle: a scrape of a large director writes tens of MB
  of text in pieces of a few tens of kB; once they are sent and freed, glibc keeps the freed
  heap for the process (it returns only the top of the heap, and only above a threshold), so
  the daemon's RSS stays ~10 MB higher than it needs to be at 10 000 real servers
  (``docs/benchmarks.md``).  ``malloc_trim(0)`` hands the free pages back; it takes a few ms.
* ``keep_large_apart``, once at start: glibc serves a request of 128 kB or more with a mapping of
  its own, returned whole when freed, until the first such mapping is freed; from then on it
  raises that threshold to the size freed (up to 32 MB), and the large tables of a pass at
  10 000 real servers (dicts and lists of 10 000 entries, the engine's arrays when the probes
  move to its threads) come from the heap, where their holes outlive them.  Fixing the
  threshold keeps them in mappings of their own; one arena for every thread keeps the engine's
  threads from growing heaps of their own.  In the test VM at 10 000 real servers: peak RSS
  78.2 MB against 81.4 MB (``bench/results/session19/``).

Where the C library is not glibc (musl), these do nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, kept from then on


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


_LIBC = _libc()


def _function(name: str) -> Callable[..., int] | None:
    try:
        return getattr(_LIBC, name) if _LIBC is not None else None
    except AttributeError:
        return None


_TRIM = _function("malloc_trim")
_MALLOPT = _function("mallopt")


def give_back() -> bool:
    """Return the free heap pages to the operating system; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def keep_large_apart() -> bool:
    """Large allocations in mappings of their own for good, one arena; False where that is not
    possible (not glibc, or glibc refused)."""
    if _MALLOPT is None:
        return False
    fixed = _MALLOPT(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    one = _MALLOPT(M_ARENA_MAX, 1)
    return bool(fixed and one)
