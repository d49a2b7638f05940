"""The C engine looking late: what the kernel received before a check's deadline counts.

A busy event loop, or a run() whose budget of events is used up while more are ready, can leave
an answer that came in time unread until after the check's deadline.  The engine then looks at
the socket before it times the check out, and does not count the time it sat on an established
HTTP connect against the real server.  These tests drive ``_tcpengine.Engine`` directly, away
for longer than the timeout while the answers come in.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from probing import full_listener

from healthd import _tcpengine

REQUEST = b"GET / HTTP/1.1\r\nHost: rs\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
PARTIAL = b"HTTP/1.1 200 OK\r\n"  # a head that never ends: an event, no result
ANY_2XX = ((200, 299),)
TIMEOUT = -1


class Answering:
    """Accepts one connection on ``server``, reads the request, waits ``delay_s`` and sends
    ``reply``; holds the connection until closed."""

    def __init__(self, server: socket.socket, reply: bytes, delay_s: float) -> None:
        self.server, self.reply, self.delay_s = server, reply, delay_s
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.server.settimeout(5.0)
        conn, _ = self.server.accept()
        self.conn = conn
        conn.settimeout(5.0)
        conn.recv(4096)
        time.sleep(self.delay_s)
        conn.sendall(self.reply)

    def close(self) -> None:
        self.thread.join(timeout=6.0)
        if self.conn is not None:
            self.conn.close()
        self.server.close()


def listening() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


@pytest.fixture
def servers() -> Iterator[list[Answering]]:
    started: list[Answering] = []
    yield started
    for s in started:
        s.close()


def http(engine: _tcpengine.Engine, server: socket.socket, timeout_s: float, due: float) -> int:
    port = server.getsockname()[1]
    return engine.add("127.0.0.1", port, 60.0, timeout_s, due, 1, False, REQUEST, ANY_2XX)


def settle(engine: _tcpengine.Engine, for_s: float = 0.02) -> list[tuple[int, int]]:
    """Run the engine for ``for_s`` (the connects on loopback done, the requests out)."""
    got = []
    until = time.monotonic() + for_s
    while time.monotonic() < until:
        got += [(handle, code) for handle, code, *_ in engine.run(64)]
        time.sleep(0.002)
    return got


def test_a_response_in_before_the_deadline_counts_though_the_engine_read_it_late(
    servers: list[Answering],
) -> None:
    late, early = listening(), listening()
    servers += [Answering(late, OK, 0.15), Answering(early, PARTIAL, 0.05)]
    engine = _tcpengine.Engine(8, 0.0, 1)
    now = time.monotonic()
    whole = http(engine, late, 0.5, now)  # its answer at ~0.15 s, deadline 0.5 s
    http(engine, early, 10.0, now)  # a partial head at ~0.05 s: ready first, no result
    assert settle(engine) == []
    time.sleep(0.8)  # the engine away past the first deadline; both answers are in
    got = engine.run(1)  # one event taken (the partial head); the budget not used up
    assert [(handle, code) for handle, code, *_ in got] == [(whole, 0)]
    duration = got[0][2]
    assert 0.1 < duration < 0.5  # when the answer came, not when the engine saw it
    engine.close()


def test_a_connect_established_before_the_deadline_succeeds_though_seen_late(
    servers: list[Answering],
) -> None:
    listener, fillers = full_listener(1)  # its queue full: the next SYN goes unanswered
    partial = listening()
    servers.append(Answering(partial, PARTIAL, 0.4))
    engine = _tcpengine.Engine(8, 0.0, 1)
    try:
        now = time.monotonic()
        connect = engine.add("127.0.0.1", listener.getsockname()[1], 60.0, 1.7, now)
        http(engine, partial, 10.0, now)
        assert settle(engine) == []
        listener.accept()[0].close()  # room: the SYN sent again after ~1 s completes it
        time.sleep(2.0)  # the engine away past the deadline (1.7 s); established at ~1 s
        got = engine.run(1)  # the partial head's event taken first
        assert [(handle, code) for handle, code, *_ in got] == [(connect, 0)]
        assert 0.9 < got[0][2] < 1.7
    finally:
        engine.close()
        listener.close()
        for filler in fillers:
            filler.close()


def test_an_http_connect_seen_late_leaves_its_answer_the_time_the_engine_took(
    servers: list[Answering],
) -> None:
    listener, fillers = full_listener(1)  # its queue full: the check's SYN goes unanswered
    engine = _tcpengine.Engine(8, 0.0, 1)
    try:
        handle = http(engine, listener, 1.5, time.monotonic())
        assert settle(engine) == []
        listener.accept()[0].close()  # room: the SYN sent again after ~1 s completes it
        servers.append(Answering(listener, OK, 0.0))  # accepts once the connect completes
        time.sleep(1.8)  # past the deadline; the connect was established at ~1 s
        got = settle(engine, 0.5)  # the request goes out now, the answer follows at once
        assert got == [(handle, 0)]
    finally:
        engine.close()
        for filler in fillers:
            filler.close()


def test_a_check_with_nothing_in_by_its_deadline_still_times_out(
    servers: list[Answering],
) -> None:
    silent, partial = listening(), listening()
    servers += [Answering(silent, b"", 0.0), Answering(partial, PARTIAL, 0.0)]
    engine = _tcpengine.Engine(8, 0.0, 1)
    now = time.monotonic()
    quiet = http(engine, silent, 0.3, now)
    half = http(engine, partial, 0.3, now)
    assert settle(engine) == []
    time.sleep(0.5)
    got = {handle: code for handle, code, *_ in engine.run(64)}
    assert got == {quiet: TIMEOUT, half: TIMEOUT}
    engine.close()
