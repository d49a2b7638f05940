"""The lean HTTP path (plain HTTP, no expect_body): the status line of the final response head
decides; malformed or cut answers are protocol errors; the body is never read."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from healthd.checkspec import HttpCheck, Reason, Target
from healthd.probes import run_probe
from healthd.probes.http import request_bytes

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> int:
        server = await asyncio.start_server(script, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def answer(*pieces: bytes, pause_s: float = 0.0) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(pause_s)
        except ConnectionError:
            pass
        finally:
            writer.close()

    return script


async def probe(port: int, **spec: object) -> tuple[Reason, str, int | None]:
    result = await run_probe(HttpCheck(**spec), Target("127.0.0.1", port))  # type: ignore[arg-type]
    return result.reason, result.detail, result.http_status


async def test_the_status_line_decides(serve: Callable[[Script], Awaitable[int]]) -> None:
    ok = await serve(answer(b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n"))
    assert await probe(ok) == (Reason.OK, f"HTTP GET 127.0.0.1:{ok}/: status 204", 204)
    bad = await serve(answer(b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy"))
    assert await probe(bad) == (Reason.STATUS, f"HTTP GET 127.0.0.1:{bad}/: status 503", 503)
    custom = await serve(answer(b"HTTP/1.1 404 Not Found\r\n\r\n"))
    assert (await probe(custom, expect_status=((404, 404),)))[0] is Reason.OK


async def test_a_head_in_pieces_and_interim_answers(
    serve: Callable[[Script], Awaitable[int]],
) -> None:
    port = await serve(
        answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2", b"00 OK\r\nA: b\r\n", b"\r\n", pause_s=0.02
        )
    )
    assert (await probe(port))[:1] == (Reason.OK,)


@pytest.mark.parametrize(
    ("pieces", "words"),
    [
        pytest.param((b"garbage\r\n\r\n",), "invalid status line", id="garbage"),
        pytest.param((b"HTTP/1.1 2OO OK\r\n\r\n",), "invalid status line", id="bad-status"),
        pytest.param((), "connection closed without a response", id="eof"),
        pytest.param((b"HTTP/1.1 200 OK\r\nContent-Le",), "closed in the response head", id="cut"),
    ],
)
async def test_malformed_answers_are_protocol_errors(
    serve: Callable[[Script], Awaitable[int]], pieces: tuple[bytes, ...], words: str
) -> None:
    reason, detail, _ = await probe(await serve(answer(*pieces)))
    assert reason is Reason.PROTOCOL
    assert words in detail


async def test_an_endless_body_is_never_read(serve: Callable[[Script], Awaitable[int]]) -> None:
    port = await serve(answer(b"HTTP/1.1 200 OK\r\n\r\n", *([b"x" * 65536] * 50)))
    async with asyncio.timeout(2):
        assert (await probe(port))[0] is Reason.OK


async def test_refused_and_request_built_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        reason, detail, _ = await probe(port)
    assert (reason, detail) == (Reason.REFUSED, f"HTTP GET 127.0.0.1:{port}/: connection refused")
    spec, target = HttpCheck(path="/h", method="HEAD"), Target("10.0.0.1", 8080)
    first = request_bytes(spec, target)
    assert first is request_bytes(spec, target)
    assert first.startswith(b"HEAD /h HTTP/1.1\r\n") and b"host: 10.0.0.1:8080\r\n" in first
