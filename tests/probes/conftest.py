"""Loopback servers for probe tests (127.0.0.1 and ::1 only, port 0)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Serve = Callable[..., Awaitable[int]]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def ipv6() -> None:
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(handler, host=..., ssl=...)`` starts a stream server and returns its port."""
    servers: list[asyncio.Server] = []

    async def start(
        handler: Handler, host: str = "127.0.0.1", ssl: ssl.SSLContext | None = None
    ) -> int:
        server = await asyncio.start_server(handler, host, 0, ssl=ssl)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _settle(predicate: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    """Let the loop run until ``predicate()`` holds (True) or ``timeout_s`` passes (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture
def settle() -> Callable[..., Awaitable[bool]]:
    return _settle


@pytest.fixture
def no_leftovers() -> Callable[[], Awaitable[None]]:
    """An awaitable check that only the test's own task is left on the loop."""

    async def check() -> None:
        me = asyncio.current_task()
        assert await _settle(lambda: asyncio.all_tasks() == {me}), asyncio.all_tasks()

    return check
