"""Measuring the daemon's I/O: each kernel request, and the event loop's lag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from healthd.ipvs.errors import IpvsExists, IpvsNotFound
from healthd.ipvs.port import IpvsPort
from healthd.model import Desired, Observed, Op, VirtualServerKey
from healthd.reconciler import op_kind

T = TypeVar("T")

# The operation label of the netlink metrics: a dump, or the kind of change (reconciler.op_kind).
NETLINK_OPERATIONS = (
    "dump",
    "add_virtual_server",
    "edit_virtual_server",
    "delete_virtual_server",
    "add_real_server",
    "edit_real_server",
    "delete_real_server",
)

# (operation, seconds, ok)
RequestObserver = Callable[[str, float, bool], None]


class TimedPort:
    """An ``IpvsPort`` that reports every request's duration and outcome, then passes it on.

    EEXIST on an add and ENOENT on an edit or delete are answers, not failures: the reconciler
    treats them as "already so".  Any other error, or a request cut short (a timeout cancels
    it), is a failure.
    """

    def __init__(
        self, port: IpvsPort, observe: RequestObserver, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.port = port
        self._observe = observe
        self._clock = clock

    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        return await self._timed("dump", self.port.dump(keys, like))

    async def apply(self, op: Op) -> None:
        await self._timed(op_kind(op), self.port.apply(op))

    async def close(self) -> None:
        await self.port.close()

    async def _timed(self, operation: str, request: Awaitable[T]) -> T:
        start = self._clock()
        ok = False
        try:
            result = await request
            ok = True
            return result
        except (IpvsExists, IpvsNotFound):
            ok = True
            raise
        finally:
            self._observe(operation, self._clock() - start, ok)


async def watch_event_loop(observe: Callable[[float], None], period_s: float = 0.5) -> None:
    """Every ``period_s``, report how late the loop woke this task up (until cancelled)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        observe(max(0.0, loop.time() - due))
