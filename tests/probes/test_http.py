"""HTTP probe against loopback servers speaking raw HTTP/1.1."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from healthd.checkspec import HttpCheck, Reason, Target
from healthd.probes import http as http_probe
from healthd.probes import matchers, run_probe, timeout_result

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Serve = Callable[..., Awaitable[int]]
Seen = list[tuple[str, dict[str, str]]]


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """The request line and the (lower-cased) headers of one request."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def responder(
    status: int = 200,
    body: bytes = b"ok",
    *,
    chunked: bool = False,
    seen: Seen | None = None,
    expect_headers: dict[str, str] | None = None,
) -> Handler:
    """A handler answering one request; 400 if ``expect_headers`` are not all present."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line, headers = await read_head(reader)
            if seen is not None:
                seen.append((line, headers))
            code = status
            if expect_headers and any(headers.get(k) != v for k, v in expect_headers.items()):
                code = 400
            if chunked:
                head = b"Transfer-Encoding: chunked\r\n"
                payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:3], body[3:]))
                payload += b"0\r\n\r\n"
            else:
                head, payload = b"Content-Length: %d\r\n" % len(body), body
            if line.startswith("HEAD "):
                payload = b""
            writer.write(b"HTTP/1.1 %d X\r\n%sConnection: close\r\n\r\n%s" % (code, head, payload))
            await writer.drain()
            await reader.read()  # until the probe closes
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handle


def target(port: int, address: str = "127.0.0.1") -> Target:
    return Target(address, port)


async def test_ok(serve: Serve) -> None:
    port = await serve(responder(200))
    result = await run_probe(HttpCheck(path="/healthz"), target(port))
    assert result.ok, result
    assert result.reason is Reason.OK
    assert result.http_status == 200
    assert result.detail == f"HTTP GET 127.0.0.1:{port}/healthz: status 200"


async def test_unexpected_status(serve: Serve) -> None:
    port = await serve(responder(503, b"down"))
    result = await run_probe(HttpCheck(path="/healthz"), target(port))
    assert not result.ok
    assert result.reason is Reason.STATUS
    assert result.http_status == 503
    assert result.detail == f"HTTP GET 127.0.0.1:{port}/healthz: status 503"


@pytest.mark.parametrize(
    ("status", "expect_status", "ok"),
    [
        pytest.param(204, ((200, 299),), True, id="2xx-range"),
        pytest.param(301, ((200, 299),), False, id="redirect-outside"),
        pytest.param(301, ((200, 299), (301, 301)), True, id="extra-single"),
        pytest.param(404, ((404, 404),), True, id="only-404"),
        pytest.param(200, ((404, 404),), False, id="200-not-404"),
    ],
)
async def test_expect_status(
    serve: Serve, status: int, expect_status: tuple[tuple[int, int], ...], ok: bool
) -> None:
    port = await serve(responder(status))
    result = await run_probe(HttpCheck(expect_status=expect_status), target(port))
    assert result.ok is ok
    assert result.reason is (Reason.OK if ok else Reason.STATUS)
    assert result.http_status == status


@pytest.mark.parametrize(
    "chunked", [pytest.param(False, id="length"), pytest.param(True, id="chunked")]
)
@pytest.mark.parametrize(
    ("body", "pattern", "ok"),
    [
        pytest.param(b'{"status":"UP"}', '"status":"UP"', True, id="match"),
        pytest.param(b'{"status":"DOWN"}', '"status":"UP"', False, id="mismatch"),
        pytest.param(b"part one, part TWO", "one.*TWO", True, id="across-chunks"),
    ],
)
async def test_expect_body(
    serve: Serve, body: bytes, pattern: str, ok: bool, chunked: bool
) -> None:
    port = await serve(responder(200, body, chunked=chunked))
    result = await run_probe(HttpCheck(expect_body=pattern), target(port))
    assert result.ok is ok, result
    assert result.http_status == 200
    if not ok:
        assert result.reason is Reason.BODY
        assert result.detail.endswith(f": body does not match '{pattern}'")


async def test_body_not_checked_when_status_fails(serve: Serve) -> None:
    port = await serve(responder(500, b"UP"))
    result = await run_probe(HttpCheck(expect_body="UP"), target(port))
    assert result.reason is Reason.STATUS


async def test_head_request_has_no_body(serve: Serve) -> None:
    seen: Seen = []
    port = await serve(responder(200, b"x" * 1000, seen=seen))  # declares 1000, sends none
    async with asyncio.timeout(2):
        result = await run_probe(HttpCheck(method="HEAD", expect_body=""), target(port))
    assert result.ok, result
    assert seen[0][0] == "HEAD / HTTP/1.1"


async def test_request_headers(serve: Serve) -> None:
    seen: Seen = []
    expected = {"user-agent": "healthd", "connection": "close", "x-check": "1"}
    port = await serve(responder(200, seen=seen, expect_headers=expected))
    spec = HttpCheck(path="/status?full=1", headers=(("X-Check", "1"),))
    result = await run_probe(spec, target(port))
    assert result.ok, result
    assert seen[0][0] == "GET /status?full=1 HTTP/1.1"
    assert seen[0][1]["host"] == f"127.0.0.1:{port}"


async def test_host_header_from_spec(serve: Serve) -> None:
    port = await serve(responder(200, expect_headers={"host": "backend.test"}))
    assert (await run_probe(HttpCheck(host="backend.test"), target(port))).ok
    port = await serve(responder(200, expect_headers={"host": "backend.test"}))
    assert (await run_probe(HttpCheck(), target(port))).reason is Reason.STATUS


async def test_spec_port_overrides_target_port(serve: Serve) -> None:
    port = await serve(responder(200))
    assert (await run_probe(HttpCheck(port=port), target(1))).ok


@pytest.mark.usefixtures("ipv6")
async def test_ipv6(serve: Serve) -> None:
    seen: Seen = []
    port = await serve(responder(200, seen=seen), host="::1")
    result = await run_probe(HttpCheck(), target(port, "::1"))
    assert result.ok, result
    assert seen[0][1]["host"] == f"[::1]:{port}"
    assert result.detail == f"HTTP GET [::1]:{port}/: status 200"


async def test_silent_server_is_cancelled_cleanly(
    serve: Serve,
    settle: Callable[..., Awaitable[bool]],
    no_leftovers: Callable[[], Awaitable[None]],
) -> None:
    connected, closed = asyncio.Event(), asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        try:
            while await reader.read(4096):  # swallow the request, never answer
                pass
        finally:
            closed.set()
            writer.close()

    port = await serve(silent)
    fds = len(os.listdir("/proc/self/fd"))
    spec = HttpCheck(path="/healthz")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await run_probe(spec, target(port))
    assert connected.is_set()
    assert await settle(closed.is_set), "the server never saw the connection closed"
    assert await settle(lambda: len(os.listdir("/proc/self/fd")) == fds), "socket left open"
    await no_leftovers()
    assert timeout_result(spec, target(port), 0.2).detail == (
        f"HTTP GET 127.0.0.1:{port}/healthz: timed out after 0.2s"
    )


async def test_trickling_body_stops_at_first_match(serve: Serve) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nREADY\r\n")
            while True:
                await asyncio.sleep(0.05)
                writer.write(b"1\r\nx\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    port = await serve(trickle)
    async with asyncio.timeout(2):
        result = await run_probe(HttpCheck(expect_body="READY"), target(port))
    assert result.ok, result


async def test_never_ending_body_without_expect_body(serve: Serve) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nx")
            await reader.read()
        except ConnectionError:
            pass
        finally:
            writer.close()

    port = await serve(endless)
    async with asyncio.timeout(2):
        assert (await run_probe(HttpCheck(), target(port))).ok


async def test_huge_body_is_read_only_up_to_max_body_bytes(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared = 50_000_000
    sent = 0

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % declared)
            block = b"x" * 65536
            while sent < declared:
                writer.write(block)
                sent += len(block)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    searched: list[int] = []
    real_body_matches = matchers.body_matches

    def spy(body: bytes | bytearray, pattern: str) -> bool:
        searched.append(len(body))
        return real_body_matches(body, pattern)

    monkeypatch.setattr(http_probe, "body_matches", spy)
    port = await serve(huge)
    async with asyncio.timeout(5):
        result = await run_probe(
            HttpCheck(expect_body="NEVER", max_body_bytes=100_000), target(port)
        )
    assert result.reason is Reason.BODY, result
    assert max(searched) == 100_000
    await asyncio.sleep(0.05)
    assert sent < declared


async def answer_with(serve: Serve, raw: bytes, *, reset: bool = False) -> Target:
    """A server that reads the request, writes ``raw``, then closes (or resets) the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(raw)
        await writer.drain()
        if reset:
            sock: Any = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    return target(await serve(handle))


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        pytest.param(b"garbage\r\n\r\n", "bad response", id="garbage"),
        pytest.param(b"HTTP/1.1 2OO OK\r\n\r\n", "bad response", id="bad-status"),
        pytest.param(b"", "connection closed without a response", id="eof"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Le", "bad response", id="eof-in-head"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "bad response", id="short-body"
        ),
    ],
)
async def test_malformed_response(serve: Serve, raw: bytes, words: str) -> None:
    result = await run_probe(HttpCheck(expect_body="NEVER"), await answer_with(serve, raw))
    assert result.reason is Reason.PROTOCOL, result
    assert words in result.detail
    assert not result.ok


async def test_reset_mid_response(serve: Serve) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc"
    result = await run_probe(
        HttpCheck(expect_body="NEVER"), await answer_with(serve, raw, reset=True)
    )
    assert result.reason in (Reason.RESET, Reason.PROTOCOL), result
    assert not result.ok


async def test_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await run_probe(HttpCheck(), target(port))
    assert result.reason is Reason.REFUSED
    assert result.detail == f"HTTP GET 127.0.0.1:{port}/: connection refused"


async def test_invalid_request_header_is_an_error() -> None:
    result = await run_probe(HttpCheck(headers=(("X-Bad", "a\r\nb"),)), target(1))
    assert result.reason is Reason.ERROR
    assert "invalid request" in result.detail


async def test_invalid_expect_body_is_an_error(serve: Serve) -> None:
    port = await serve(responder(200, b"UP"))
    result = await run_probe(HttpCheck(expect_body="("), target(port))
    assert result.reason is Reason.ERROR
    assert "bad expect_body" in result.detail
    assert result.http_status == 200
