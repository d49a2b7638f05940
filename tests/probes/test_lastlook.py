"""HTTP(S) checks run in Python get a last look before they are timed out (``lastlook.py``).

The event loop is held (a callback that sleeps) past the check's deadline while a real server,
in a thread, answers: an answer that came in time counts, with the server's time as its
duration; one that came after the deadline does not; a connect the loop saw late does not count
against the server.  Without the last look every one of these was "timed out".
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from healthd.checkspec import CheckTiming, HttpCheck, Reason, Target
from healthd.probes import probe_http_within
from healthd.probes.lastlook import Look
from healthd.scheduler import Scheduler
from healthd.state import ProbeKey

TIMEOUT_S = 0.3
HOLD_S = 0.6  # the loop held this long: well past the deadline
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nUP"


class Backend:
    """A real server in a thread: accepts one connection (TLS if ``context``), reads the request
    head, waits ``delay_s``, answers ``REPLY`` and keeps the connection open until closed."""

    def __init__(self, delay_s: float = 0.0, context: ssl.SSLContext | None = None) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.delay_s, self.context = delay_s, context
        self.answered_at: float | None = None
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.server.settimeout(5.0)
        conn, _ = self.server.accept()
        self.conns.append(conn)
        conn.settimeout(5.0)
        if self.context is not None:
            conn = self.context.wrap_socket(conn, server_side=True)
            self.conns.append(conn)
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(4096)
            if not data:
                return
            head += data
        time.sleep(self.delay_s)
        conn.sendall(REPLY)
        self.answered_at = time.monotonic()

    def close(self) -> None:
        self.thread.join(timeout=6.0)
        for conn in self.conns:
            conn.close()
        self.server.close()


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    made: list[Backend] = []
    yield made
    for backend in made:
        backend.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def hold_loop(after_s: float) -> None:
    """Hold the running loop for HOLD_S, ``after_s`` from now (0: once what is queued ran)."""
    loop = asyncio.get_running_loop()
    if after_s:
        loop.call_later(after_s, time.sleep, HOLD_S)
    else:
        loop.call_soon(time.sleep, HOLD_S)


PLAIN = HttpCheck()  # status only: the lean path
BODY = HttpCheck(expect_body="UP")  # the h11 path over asyncio streams


@pytest.mark.parametrize("spec", [PLAIN, BODY], ids=["status", "body"])
async def test_an_answer_that_came_in_time_counts_though_the_loop_read_it_late(
    spec: HttpCheck, backends: list[Backend]
) -> None:
    backend = Backend(delay_s=0.1)  # answers while the loop is held, in time
    backends.append(backend)
    started = time.monotonic()
    hold_loop(0.05)  # the request sent by then; the loop comes back after the deadline
    result = await probe_http_within(spec, Target("127.0.0.1", backend.port), TIMEOUT_S)
    assert time.monotonic() - started > TIMEOUT_S  # the deadline did pass first
    assert result.ok, result
    assert result.duration_s < TIMEOUT_S  # the server's time, not the loop's


async def test_the_scheduler_runs_http_checks_with_the_last_look(backends: list[Backend]) -> None:
    backend = Backend(delay_s=0.1)
    backends.append(backend)
    key = ProbeKey(BODY, Target("127.0.0.1", backend.port), CheckTiming(1.0, TIMEOUT_S))
    hold_loop(0.05)
    result = await Scheduler([], lambda k, r: None).probe_once(key)
    assert result.ok, result


async def test_an_https_answer_that_came_in_time_counts_too(
    ca: trustme.CA, tmp_path: Path, backends: list[Backend]
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    backend = Backend(delay_s=0.15, context=context)
    backends.append(backend)
    hold_loop(0.1)  # the handshake and the request done by then
    spec = HttpCheck(https=True, ca_file=str(ca_file), expect_body="UP")
    result = await probe_http_within(spec, Target("127.0.0.1", backend.port), TIMEOUT_S)
    assert result.ok, result
    assert result.duration_s < TIMEOUT_S


@pytest.mark.parametrize("spec", [PLAIN, BODY], ids=["status", "body"])
async def test_an_answer_after_the_deadline_still_times_out(
    spec: HttpCheck, backends: list[Backend]
) -> None:
    backend = Backend(delay_s=TIMEOUT_S + 0.1)  # answers while the loop is held, but too late
    backends.append(backend)
    hold_loop(0.05)
    result = await probe_http_within(spec, Target("127.0.0.1", backend.port), TIMEOUT_S)
    assert backend.answered_at is not None  # it did answer before the loop looked
    assert result.reason is Reason.TIMEOUT, result
    assert result.detail.endswith("timed out after 0.3s")


async def test_a_silent_server_times_out(backends: list[Backend]) -> None:
    backend = Backend(delay_s=3.0)
    backends.append(backend)
    result = await probe_http_within(PLAIN, Target("127.0.0.1", backend.port), TIMEOUT_S)
    assert result.reason is Reason.TIMEOUT, result


async def test_a_connect_the_loop_saw_late_does_not_count_against_the_server(
    backends: list[Backend],
) -> None:
    backend = Backend()
    backends.append(backend)
    probe = asyncio.ensure_future(
        probe_http_within(BODY, Target("127.0.0.1", backend.port), TIMEOUT_S)
    )
    hold_loop(0)  # right after the probe's first step: its connect is in progress
    result = await probe
    assert result.ok, result
    assert result.duration_s < TIMEOUT_S


def test_a_look_finds_owed_only_what_came_by_the_deadline_and_was_not_taken() -> None:
    """``Look.owed``: what a look at the deadline gives another turn for (a connect the probe
    has not seen, unread bytes), read from the kernel (TCP_INFO, FIONREAD)."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    try:
        time.sleep(0.05)
        now = time.monotonic()
        look = Look(deadline=now, timeout_s=TIMEOUT_S)
        look.watch(client)
        assert look.owed(now) is not None  # established before the deadline, not seen
        look.connect_seen()
        assert look.owed(time.monotonic()) is None  # seen, and nothing to read
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        time.sleep(0.05)
        look.deadline = time.monotonic()
        arrived = look.owed(time.monotonic())
        assert arrived is not None and arrived <= look.deadline - 0.03  # when it came
        look.deadline = arrived - 0.02  # had the deadline been before it came
        assert look.owed(time.monotonic()) is None
        look.deadline = time.monotonic()
        client.recv(100)
        assert look.owed(time.monotonic()) is None  # taken
    finally:
        for s in (client, conn, server):
            s.close()
