"""Computations over whole tables, in steps: generators that yield (nothing) now and then.

The pure core's function that walks every real server (``plan``) is written
as a generator so that a caller on an event loop can run other tasks between steps: at 20 000
real servers one walk is 10-30 ms, and every probe due meanwhile would start that much late.
A caller without a loop runs it to the end at once (``run_steps``).  Pure: no asyncio here.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import TypeVar

_T = TypeVar("_T")

# real servers walked between two yields (~0.2-0.5 ms of work)
STEP_REAL_SERVERS = 512

Steps = Generator[None, None, _T]


def chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``items`` in slices of STEP_REAL_SERVERS: a walk yields after each (a test per item
    cost more than the rest of the walk's work on an unchanged real server)."""
    for start in range(0, len(items), STEP_REAL_SERVERS):
        yield items[start : start + STEP_REAL_SERVERS]


def run_steps(steps: Steps[_T]) -> _T:
    """Run a stepped computation to its end at once; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: _T = done.value
            return result
