"""The lean HTTP path (plain HTTP, no expect_body): the status line of the final response head
decides; malformed or cut answers are protocol errors; the body is never read.

Every scenario runs twice: through the Python probe (``run_probe``) and through the C engine
(``probes.native``, what the scheduler uses where the extension is built); both must say the
same, word for word."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from healthd.checkspec import HttpCheck, ProbeResult, Reason, Target
from healthd.probes import run_probe, timeout_result
from healthd.probes.http import request_bytes
from healthd.probes.native import NativeTcp

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


async def in_engine(spec: HttpCheck, target: Target, timeout_s: float = 5.0) -> ProbeResult:
    """One check of ``spec`` run by the C engine."""
    got: list[ProbeResult] = []
    loop = asyncio.get_running_loop()
    engine: NativeTcp[str] = NativeTcp(
        loop, lambda token, r, delay: got.append(r), max_in_flight=64, jitter=0.0, seed=1
    )
    try:
        engine.add("check", spec, target, 60.0, timeout_s, loop.time())
        async with asyncio.timeout(timeout_s + 2):
            while not got:
                await asyncio.sleep(0.005)
    finally:
        engine.close()
    return got[0]


@pytest.fixture(params=["python", "engine"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Probe = Callable[..., Awaitable[tuple[Reason, str, int | None]]]


@pytest.fixture
def probe(path: str) -> Probe:
    async def run(port: int, **fields: object) -> tuple[Reason, str, int | None]:
        spec, target = HttpCheck(**fields), Target("127.0.0.1", port)  # type: ignore[arg-type]
        if path == "python":
            result = await run_probe(spec, target)
        else:
            result = await in_engine(spec, target)
        assert result.ok is (result.reason is Reason.OK)
        return result.reason, result.detail, result.http_status

    return run


async def test_the_status_line_decides(
    serve: Callable[[Script], Awaitable[int]], probe: Probe
) -> None:
    ok = await serve(answer(b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n"))
    assert await probe(ok) == (Reason.OK, f"HTTP GET 127.0.0.1:{ok}/: status 204", 204)
    bad = await serve(answer(b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy"))
    assert await probe(bad) == (Reason.STATUS, f"HTTP GET 127.0.0.1:{bad}/: status 503", 503)
    custom = await serve(answer(b"HTTP/1.1 404 Not Found\r\n\r\n"))
    assert (await probe(custom, expect_status=((404, 404),)))[0] is Reason.OK


async def test_a_head_in_pieces_and_interim_answers(
    serve: Callable[[Script], Awaitable[int]], probe: Probe
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
    serve: Callable[[Script], Awaitable[int]], pieces: tuple[bytes, ...], words: str, probe: Probe
) -> None:
    reason, detail, _ = await probe(await serve(answer(*pieces)))
    assert reason is Reason.PROTOCOL
    assert words in detail


async def test_an_endless_body_is_never_read(
    serve: Callable[[Script], Awaitable[int]], probe: Probe
) -> None:
    port = await serve(answer(b"HTTP/1.1 200 OK\r\n\r\n", *([b"x" * 65536] * 50)))
    async with asyncio.timeout(2):
        assert (await probe(port))[0] is Reason.OK


async def test_refused_and_request_built_once(probe: Probe) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        reason, detail, _ = await probe(port)
    assert (reason, detail) == (Reason.REFUSED, f"HTTP GET 127.0.0.1:{port}/: connection refused")
    spec, target = HttpCheck(path="/h", method="HEAD"), Target("10.0.0.1", 8080)
    first = request_bytes(spec, target)
    assert first is request_bytes(spec, target)
    assert first.startswith(b"HEAD /h HTTP/1.1\r\n") and b"host: 10.0.0.1:8080\r\n" in first


ANSWERS = [
    pytest.param((b"HTTP/1.1 200 OK\r\n\r\n",), id="ok"),
    pytest.param((b"HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n",), id="redirect"),
    pytest.param((b"HTTP/1.1 101 Switching\r\n\r\n",), id="switching-is-final"),
    pytest.param((b"HTTP/1.1 103 Early\r\n\r\n", b"HTTP/1.1 500 Oops\r\n\r\n"), id="interim"),
    pytest.param((b"HTTP/1.1 200\r\n\r\n",), id="no-reason-phrase"),
    pytest.param((b"HTTP/1.1 200 OK\nX: y\r\n\r\n",), id="bare-newline"),
    pytest.param((b"HTTP/2 200 OK\r\n\r\n",), id="http2"),
    pytest.param((b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 70_000,), id="endless-head"),
    pytest.param((b"\x00\xff" * 100 + b"\r\n\r\n",), id="binary"),
    pytest.param((b"HTTP/1.1 100 Continue\r\n\r\n",), id="only-interim"),
]


@pytest.mark.parametrize("pieces", ANSWERS)
async def test_the_engine_says_what_the_python_probe_says(
    serve: Callable[[Script], Awaitable[int]], pieces: tuple[bytes, ...]
) -> None:
    port = await serve(answer(*pieces, pause_s=0.01))
    spec, target = HttpCheck(expect_status=((200, 299), (500, 500))), Target("127.0.0.1", port)
    python, engine = await run_probe(spec, target), await in_engine(spec, target)
    assert (engine.ok, engine.reason, engine.detail, engine.http_status) == (
        python.ok,
        python.reason,
        python.detail,
        python.http_status,
    )


async def test_the_engine_times_out_a_backend_that_never_answers(
    serve: Callable[[Script], Awaitable[int]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # the request, then nothing until the check gives up
        except ConnectionError:
            pass
        finally:
            writer.close()

    port = await serve(silent)
    spec, target = HttpCheck(), Target("127.0.0.1", port)
    result = await in_engine(spec, target, timeout_s=0.3)
    assert result == timeout_result(spec, target, 0.3)


async def test_a_quiet_check_reports_a_new_status_and_counts_the_same_one(
    serve: Callable[[Script], Awaitable[int]],
) -> None:
    """Once settled, the engine counts successes with the status last reported; a success
    with another status is reported (the metrics show the latest status)."""
    statuses = [b"200"] * 4 + [b"204"] * 10
    answered: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        status = statuses[min(len(answered), len(statuses) - 1)]
        answered.append(status)
        writer.write(b"HTTP/1.1 " + status + b" X\r\n\r\n")
        writer.close()

    port = await serve(script)
    got: list[ProbeResult] = []
    loop = asyncio.get_running_loop()
    engine: NativeTcp[str] = NativeTcp(
        loop, lambda token, r, delay: got.append(r), max_in_flight=8, jitter=0.0, seed=1
    )
    try:
        handle = engine.add("c", HttpCheck(), Target("127.0.0.1", port), 0.05, 1.0, loop.time())
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.005)
            engine.quiet(handle)
            while len(answered) < 4:
                await asyncio.sleep(0.005)
            assert [r.http_status for r in got] == [200]  # three more 200s: counted
            while len(got) < 2:
                await asyncio.sleep(0.005)
        count = engine.drain_one(handle)
    finally:
        engine.close()
    assert [(r.ok, r.http_status) for r in got] == [(True, 200), (True, 204)]
    assert count is not None and count.n == 3


async def test_checks_the_engine_cannot_run_are_refused() -> None:
    loop = asyncio.get_running_loop()
    engine: NativeTcp[str] = NativeTcp(
        loop, lambda token, r, delay: None, max_in_flight=8, jitter=0.0, seed=1
    )
    target = Target("127.0.0.1", 80)
    try:
        for spec in (HttpCheck(https=True), HttpCheck(expect_body="ok"), HttpCheck(path="/a b")):
            with pytest.raises(ValueError):
                engine.add("c", spec, target, 1.0, 1.0, loop.time())
        assert len(engine) == 0
    finally:
        engine.close()
