"""Helpers shared by the host tests of the scheduler, the probe workers and the TCP probe."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from healthd.checkspec import CheckTiming, Target, TcpCheck
from healthd.state import ProbeKey


def tcp_key(port: int, interval_s: float = 0.1) -> ProbeKey:
    """A TCP probe of a loopback port, every ``interval_s``."""
    return ProbeKey(TcpCheck(), Target("127.0.0.1", port), CheckTiming(interval_s, interval_s / 2))


def close_seen_by(server: socket.socket) -> str:
    """Accept the next connection queued on ``server`` and say how its client closed it, as the
    real server sees it: "reset" (an RST: the read fails), "graceful" (a FIN: the read ends)."""
    server.settimeout(5.0)
    conn = server.accept()[0]
    with conn:
        conn.settimeout(5.0)
        try:
            data = conn.recv(1)
        except ConnectionResetError:
            return "reset"
    assert data == b"", data
    return "graceful"


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


def full_listener(fillers: int) -> tuple[socket.socket, list[socket.socket]]:
    """A loopback listener with a backlog of 0 and ``fillers`` connects queued on it: with 3, its
    accept queue is full and new SYNs go unanswered; with 2, one more connect stays in progress
    until two are accepted (then the SYN sent again after ~1 s completes it).  The caller closes
    the listener and the fillers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = [socket.socket() for _ in range(fillers)]
    for filler in queued:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    return server, queued


class LoopTurns:
    """Counts the turns other tasks get on the event loop while a block runs:

    async with LoopTurns() as turns:
        await something()
    turns.count  # 0 if ``something`` never gave the loop back
    """

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1

    async def __aenter__(self) -> LoopTurns:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # started
        self.count = 0
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
