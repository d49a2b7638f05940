"""/metrics sends the exposition's pieces as one body, exactly, writing them as it goes with the
event loop running between two, one scrape at a time; /healthz follows readiness."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST

from healthd import memory
from healthd.api import CHUNK_BYTES, SLICE_S, make_app

LARGE = [b"# HELP a x\n", bytes(range(256)) * (CHUNK_BYTES // 100), b"", b"z" * CHUNK_BYTES, b"\n"]


async def _get(
    pieces: bytes | Iterable[bytes], method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    app = make_app(lambda: pieces, lambda: True)
    async with TestClient(TestServer(app)) as client:
        response = await client.request(method, "/metrics")
        return response.status, dict(response.headers), await response.read()


async def test_a_large_exposition_goes_out_whole_in_order_as_it_is_written() -> None:
    status, headers, body = await _get(iter(LARGE))
    assert status == 200
    assert body == b"".join(LARGE)
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert headers["Transfer-Encoding"] == "chunked"  # sent before it is all written


async def test_the_event_loop_runs_between_two_pieces() -> None:
    """A large exposition is written piece by piece, and what else the loop has to do (the
    probes) runs in between (after every SLICE_S of writing), not after the whole."""
    ticks = 0
    seen: list[int] = []

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def pieces() -> Iterator[bytes]:
        for piece in LARGE:
            seen.append(ticks)
            time.sleep(2 * SLICE_S)  # writing a piece: work that holds the loop
            yield piece

    worker = asyncio.create_task(other_work())
    try:
        status, _, body = await _get(pieces())
    finally:
        worker.cancel()
    assert (status, body) == (200, b"".join(LARGE))
    assert len(seen) == len(LARGE)
    assert all(b > a for a, b in itertools.pairwise(seen)), seen


async def test_scrapes_at_the_same_time_each_get_a_whole_exposition() -> None:
    """The families are filled in place: two scrapes must not write into each other's."""
    state = {"n": 0}

    def pieces() -> Iterator[bytes]:
        state["n"] = 0  # a family's start()
        for _ in range(5):
            state["n"] += 1
            yield f"line {state['n']}\n".encode() * (CHUNK_BYTES // 8)

    expected = b"".join(f"line {i}\n".encode() * (CHUNK_BYTES // 8) for i in range(1, 6))
    app = make_app(pieces, lambda: True)
    async with TestClient(TestServer(app)) as client:

        async def scrape() -> bytes:
            response = await client.get("/metrics")
            return await response.read()

        bodies = await asyncio.gather(*(scrape() for _ in range(3)))
    assert bodies == [expected] * 3


async def test_a_small_exposition_goes_out_with_its_length() -> None:
    for pieces in ([b"a 1\n", b"b 2\n"], b"a 1\n"):
        status, headers, body = await _get(pieces)
        expected = pieces if isinstance(pieces, bytes) else b"".join(pieces)
        assert (status, body, headers["Content-Length"]) == (200, expected, str(len(expected)))


async def test_a_large_single_body_goes_out_whole() -> None:
    large = bytes(range(256)) * (3 * CHUNK_BYTES // 256) + b"x"
    status, _, body = await _get(large)
    assert (status, body) == (200, large)


async def test_an_http_1_0_client_gets_a_large_exposition_whole() -> None:
    app = make_app(lambda: iter(LARGE), lambda: True)
    async with TestClient(TestServer(app)) as client:
        url = client.make_url("/metrics")
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        answer = await reader.read()  # to the end of the connection
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), head[:40]
    assert body == b"".join(LARGE)


async def test_head_has_no_body() -> None:
    status, headers, body = await _get(LARGE, "HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST


async def test_healthz_follows_readiness() -> None:
    ready = False
    app = make_app(lambda: [b""], lambda: ready)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 503
        ready = True
        assert (await client.get("/healthz")).status == 200


async def test_a_client_that_stops_reading_does_not_hold_up_the_next_scrape() -> None:
    """Writing the exposition is one scrape at a time; sending it is not: a scraper that never
    reads its answer leaves the others answered."""
    big = [bytes([i % 256]) * (1 << 20) for i in range(40)]  # more than the sockets take

    def pieces() -> Iterator[bytes]:
        for piece in big:
            time.sleep(2 * SLICE_S)  # written slowly: sent as it is written
            yield piece

    app = make_app(pieces, lambda: True)
    async with TestClient(TestServer(app)) as client:
        url = client.make_url("/metrics")
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: stuck\r\n\r\n")
        await reader.readexactly(1)  # its answer has started; it reads no more
        try:
            response = await asyncio.wait_for(client.get("/metrics"), 10)
            body = await asyncio.wait_for(response.read(), 10)
        finally:
            writer.close()
    assert body == b"".join(big)


async def test_a_slow_client_is_not_written_far_ahead_of() -> None:
    """While a client has not read, the exposition is written only so far ahead of it (what
    the sockets take, and HELD_BYTES more), not whole into memory; once it reads, all of it
    comes, in order."""
    big = [bytes([i % 256]) * (1 << 20) for i in range(60)]
    written = 0

    def pieces() -> Iterator[bytes]:
        nonlocal written
        for piece in big:
            time.sleep(SLICE_S)
            written += 1
            yield piece

    app = make_app(pieces, lambda: True)
    async with TestClient(TestServer(app)) as client:
        url = client.make_url("/metrics")
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        first = await reader.readexactly(1)  # its answer has started
        await asyncio.sleep(0.6)  # it reads nothing for a while (less than PATIENCE_S)
        ahead = written
        rest = await asyncio.wait_for(reader.read(), 20)
        writer.close()
    assert ahead < 40  # without the bound: all 60 (MB) written while it did not read
    assert (first + rest).partition(b"\r\n\r\n")[2] == b"".join(big)


async def test_after_a_large_scrape_its_memory_goes_back_to_the_system(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(memory, "give_back", lambda: calls.append("trim") or True)
    status, _, body = await _get(iter(LARGE))
    assert status == 200 and body == b"".join(LARGE)
    assert calls == ["trim"]
    await _get([b"# small\n"])  # a small one is one allocation: nothing to give back
    assert calls == ["trim"]


def test_the_free_heap_can_be_given_back_here() -> None:
    """Debian's C library is glibc: malloc_trim is there (elsewhere give_back does nothing)."""
    assert memory.give_back() is True
