"""Giving freed memory back to the operating system after a scrape.

A scrape of a large director writes tens of MB of text in pieces of a few tens of kB; once they
are sent and freed, glibc keeps the freed heap for the process (it returns only the top of the
heap, and only above a threshold), so the daemon's RSS stays ~10 MB higher than it needs to be at
10 000 real servers (``docs/benchmarks.md``).  ``malloc_trim(0)`` hands the free pages back; it
takes a few ms.  Where the C library has no ``malloc_trim`` (musl), this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_TRIM = _malloc_trim()


def give_back() -> bool:
    """Return the free heap pages to the operating system; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
