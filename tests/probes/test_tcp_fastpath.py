"""The TCP probe's two halves: ``tcp_start`` (synchronous) and ``tcp_wait`` (a connect still in
progress), against loopback listeners; a listener with a full accept queue drops SYNs, which
keeps a connect in progress for as long as a test needs."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from healthd.checkspec import ProbeResult, Reason, Target, TcpCheck
from healthd.probes.tcp import PendingConnect, probe_tcp, tcp_start, tcp_wait


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_near_listener_is_decided_without_waiting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        before = open_fds()
        result = tcp_start(TcpCheck(), Target("127.0.0.1", port))
        assert isinstance(result, ProbeResult)
        assert result.ok and result.detail == f"TCP connect 127.0.0.1:{port}: connected"
        assert open_fds() == before  # closed at once


def test_a_refusal_is_decided_without_waiting() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        result = tcp_start(TcpCheck(), Target("127.0.0.1", port))
    assert isinstance(result, ProbeResult)
    assert result.reason is Reason.REFUSED
    assert result.detail == f"TCP connect 127.0.0.1:{port}: connection refused"


def test_a_connect_in_progress_is_handed_over(stalled_port: int) -> None:
    before = open_fds()
    pending = tcp_start(TcpCheck(), Target("127.0.0.1", stalled_port))
    assert isinstance(pending, PendingConnect)
    assert open_fds() == before + 1
    pending.close()  # abandoning it closes the socket
    assert open_fds() == before


async def test_waiting_is_cancelled_by_the_callers_timeout_and_closes(stalled_port: int) -> None:
    before = open_fds()
    pending = tcp_start(TcpCheck(), Target("127.0.0.1", stalled_port))
    assert isinstance(pending, PendingConnect)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await tcp_wait(pending)
    assert open_fds() == before


async def test_waiting_ends_when_the_listener_accepts() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.socket()
    filler.setblocking(False)
    filler.connect_ex(("127.0.0.1", port))
    filler2 = socket.socket()
    filler2.setblocking(False)
    filler2.connect_ex(("127.0.0.1", port))
    try:
        await asyncio.sleep(0.05)
        pending = tcp_start(TcpCheck(), Target("127.0.0.1", port))
        assert isinstance(pending, PendingConnect)
        for conn in (server.accept()[0], server.accept()[0]):  # room in the queue again
            conn.close()
        result = await asyncio.wait_for(tcp_wait(pending), 10)  # SYN retransmitted after 1 s
        assert result.ok, result
    finally:
        for sock in (server, filler, filler2):
            sock.close()


async def test_probe_tcp_is_both_halves() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        result = await probe_tcp(TcpCheck(), Target("127.0.0.1", server.getsockname()[1]))
    assert result.ok
