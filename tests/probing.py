"""Helpers shared by the tests of the scheduler's process placement (workers, auto)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from healthd.checkspec import CheckTiming, Target, TcpCheck
from healthd.state import ProbeKey


def tcp_key(port: int, interval_s: float = 0.1) -> ProbeKey:
    """A TCP probe of a loopback port, every ``interval_s``."""
    return ProbeKey(TcpCheck(), Target("127.0.0.1", port), CheckTiming(interval_s, interval_s / 2))


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)
