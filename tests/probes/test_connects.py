"""``ConnectWaiter``: connects in progress waited for in one epoll set, timeouts per FIFO queue.

Loopback only; a listener with a full accept queue (``stalled_port``) keeps a connect in
progress, and a socketpair stands in for a connect that is already writable."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
from probing import close_seen_by, full_listener, until

from healthd.checkspec import ProbeResult, Reason, Target, TcpCheck
from healthd.probes.connects import ConnectWaiter
from healthd.probes.matchers import timeout_text
from healthd.probes.tcp import PendingConnect, tcp_start

Got = list[tuple[str, ProbeResult | None, float]]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def start(port: int) -> PendingConnect:
    pending = tcp_start(TcpCheck(), Target("127.0.0.1", port))
    assert isinstance(pending, PendingConnect), pending
    return pending


def recorder(got: Got) -> ConnectWaiter[str]:
    loop = asyncio.get_running_loop()
    return ConnectWaiter(loop, lambda token, result: got.append((token, result, loop.time())))


async def test_connects_time_out_at_their_own_timeout_and_leave_no_socket(
    stalled_port: int,
) -> None:
    before = open_fds()
    got: Got = []
    waiter = recorder(got)
    t0 = asyncio.get_running_loop().time()
    waiter.wait("slow", start(stalled_port), 0.3)
    waiter.wait("fast", start(stalled_port), 0.1)
    waiter.wait("fast-2", start(stalled_port), 0.1)
    await until(lambda: len(got) == 3)
    assert [token for token, _, _ in got] == ["fast", "fast-2", "slow"]
    for token, result, at in got:
        timeout_s = 0.3 if token == "slow" else 0.1
        assert result is not None and result.reason is Reason.TIMEOUT
        assert result.detail == f"TCP connect 127.0.0.1:{stalled_port}: {timeout_text(timeout_s)}"
        assert timeout_s <= at - t0 < timeout_s + 0.1
    assert len(waiter) == 0
    waiter.close()
    assert open_fds() == before


async def test_a_cancelled_connect_reports_nothing_and_the_rest_still_time_out(
    stalled_port: int,
) -> None:
    got: Got = []
    waiter = recorder(got)
    first = waiter.wait("first", start(stalled_port), 0.1)  # the head of the 0.1 s queue
    waiter.wait("second", start(stalled_port), 0.1)
    first.cancel()
    first.cancel()  # twice is once
    assert got[0][:2] == ("first", None)
    await until(lambda: len(got) == 2)
    assert got[1][0] == "second" and got[1][1] is not None
    assert got[1][1].reason is Reason.TIMEOUT
    waiter.close()


async def test_a_connect_that_completes_later_is_ok() -> None:
    server, fillers = full_listener(2)
    port = server.getsockname()[1]
    await asyncio.sleep(0.05)
    got: Got = []
    waiter = recorder(got)
    waiter.wait("late", start(port), 10.0)
    for conn in (server.accept()[0], server.accept()[0]):  # room in the queue again
        conn.close()
    await until(lambda: bool(got))  # the SYN is sent again after 1 s
    result = got[0][1]
    assert result is not None and result.ok
    assert result.detail == f"TCP connect 127.0.0.1:{port}: connected"
    waiter.close()
    for sock in (server, *fillers):
        sock.close()


@pytest.mark.parametrize("close", ["reset", "graceful"])
async def test_a_connect_that_completes_later_is_closed_as_the_check_asks(close: str) -> None:
    server, fillers = full_listener(2)
    port = server.getsockname()[1]
    await asyncio.sleep(0.05)
    got: Got = []
    waiter = recorder(got)
    pending = tcp_start(TcpCheck(close=close), Target("127.0.0.1", port))
    assert isinstance(pending, PendingConnect), pending
    waiter.wait("late", pending, 10.0)
    for conn in (server.accept()[0], server.accept()[0]):  # room in the queue again
        conn.close()
    await until(lambda: bool(got))  # the SYN is sent again after 1 s
    assert got[0][1] is not None and got[0][1].ok
    assert close_seen_by(server) == close
    waiter.close()
    for sock in (server, *fillers):
        sock.close()


async def test_a_connect_refused_while_in_progress_is_refused() -> None:
    server, fillers = full_listener(3)
    port = server.getsockname()[1]
    got: Got = []
    waiter = recorder(got)
    waiter.wait("gone", start(port), 10.0)
    server.close()  # the SYN sent again after 1 s finds no listener
    await until(lambda: bool(got))
    result = got[0][1]
    assert result is not None and result.reason is Reason.REFUSED
    assert result.detail == f"TCP connect 127.0.0.1:{port}: connection refused"
    waiter.close()
    for filler in fillers:
        filler.close()


async def test_events_of_a_closed_socket_never_finish_a_new_one_with_its_number(
    stalled_port: int,
) -> None:
    """Two writable sockets come back from one epoll_wait; finishing the first cancels the
    second and starts connects that may take its file descriptor number.  They are still in
    progress: the second's event is not theirs."""
    pairs = [socket.socketpair() for _ in range(2)]
    target = Target("127.0.0.1", 9)
    got: Got = []
    waiting = {}
    fresh: list[str] = []

    def done(token: str, result: ProbeResult | None) -> None:
        got.append((token, result, 0.0))
        if len(got) == 1:
            other = "b" if token == "a" else "a"
            waiting[other].cancel()
            for name in ("c", "d"):  # new sockets: the lowest free numbers, the two just freed
                waiting[name] = waiter.wait(name, start(stalled_port), 5.0)
                fresh.append(name)

    waiter = ConnectWaiter(asyncio.get_running_loop(), done)
    for name, (mine, _) in zip("ab", pairs, strict=True):
        waiting[name] = waiter.wait(
            name, PendingConnect(TcpCheck(), target, mine, time.monotonic()), 5.0
        )
    await until(lambda: len(got) >= 2)
    await asyncio.sleep(0.05)
    first, second = got[0], got[1]
    assert first[1] is not None and first[1].ok
    assert second[1] is None  # cancelled
    assert len(got) == 2, got  # c and d: no result, still in progress
    assert len(waiter) == 2 and fresh == ["c", "d"]
    waiter.close()
    assert sorted(token for token, _, _ in got[2:]) == ["c", "d"]
    for _, peer in pairs:
        peer.close()


async def test_close_cancels_every_connect_and_closes_its_socket(stalled_port: int) -> None:
    before = open_fds()
    got: Got = []
    waiter = recorder(got)
    for name in ("x", "y"):
        waiter.wait(name, start(stalled_port), 5.0)
    waiter.close()
    assert sorted((token, result) for token, result, _ in got) == [("x", None), ("y", None)]
    assert open_fds() == before


async def test_a_connect_started_by_a_timeout_does_not_delay_the_next_timeout(
    stalled_port: int,
) -> None:
    loop = asyncio.get_running_loop()
    got: Got = []

    def done(token: str, result: ProbeResult | None) -> None:
        got.append((token, result, loop.time()))
        if token == "a":  # a probe whose timeout starts the next (the scheduler does this)
            waiter.wait("c", start(stalled_port), 0.2)

    waiter = ConnectWaiter(loop, done)
    t0 = loop.time()
    waiter.wait("a", start(stalled_port), 0.2)
    await asyncio.sleep(0.1)
    waiter.wait("b", start(stalled_port), 0.2)  # due at 0.3, c at 0.4
    await until(lambda: len(got) == 3)
    at = {token: when - t0 for token, _, when in got}
    assert [token for token, _, _ in got] == ["a", "b", "c"]
    assert 0.3 <= at["b"] < 0.37, at
    assert 0.4 <= at["c"] < 0.47, at
    waiter.close()


async def test_a_socket_closed_while_a_child_holds_it_does_not_answer_for_its_successor(
    stalled_port: int,
) -> None:
    """A check script's child holds every socket between fork and exec; a socket closed then
    stays in the epoll set unless taken out first, and would answer for the next socket given
    its number."""
    got: Got = []
    waiter = recorder(got)
    mine, peer = socket.socketpair()  # writable at once
    fd = mine.fileno()
    first = waiter.wait("first", PendingConnect(TcpCheck(), Target("127.0.0.1", 9), mine, 0.0), 5)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # holds every descriptor until the parent is done
        os.read(reader, 1)
        os._exit(0)
    try:
        first.cancel()
        second = start(stalled_port)
        assert second.sock.fileno() == fd  # the number is free again, and taken
        waiter.wait("second", second, 5.0)
        await asyncio.sleep(0.1)  # the loop reads the epoll set a few times
        assert [(token, result) for token, result, _ in got] == [("first", None)]
    finally:
        os.write(writer, b"x")
        os.waitpid(child, 0)
        for end in (reader, writer):
            os.close(end)
        peer.close()
        waiter.close()


class EarlyTimers:
    """The running loop, but its timers fire 0.9 ms early (as uvloop's may: its clock counts
    milliseconds); counts the timers armed."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.armed = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.loop, name)

    def call_at(self, when: float, callback: object, *args: object) -> asyncio.TimerHandle:
        self.armed += 1
        assert callable(callback)
        return self.loop.call_at(when - 0.0009, callback, *args)


async def test_a_timer_firing_a_little_early_times_out_rather_than_spinning(
    stalled_port: int,
) -> None:
    loop = EarlyTimers()
    got: Got = []
    waiter: ConnectWaiter[str] = ConnectWaiter(
        loop,  # type: ignore[arg-type]
        lambda token, result: got.append((token, result, 0.0)),
    )
    waiter.wait("slow", start(stalled_port), 0.1)
    await until(lambda: bool(got))
    result = got[0][1]
    assert result is not None and result.reason is Reason.TIMEOUT
    assert loop.armed == 1  # one timer, not one per turn of the loop until the deadline
    waiter.close()


async def test_a_connect_established_by_its_deadline_succeeds_though_the_loop_came_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two connects come up at ~1 s (the SYN sent again); the loop is held past their 1.6 s
    deadline, and one ``epoll_wait`` takes one socket: the other's timer fires first.  What the
    kernel had established by the deadline counts."""
    monkeypatch.setattr("healthd.probes.connects.MAX_EVENTS", 1)
    listeners = [full_listener(1) for _ in range(2)]  # each queue full: the SYNs go unanswered
    got: Got = []
    waiter = recorder(got)
    for token, (server, _) in zip("ab", listeners, strict=True):
        waiter.wait(token, start(server.getsockname()[1]), 1.6)
    for server, _ in listeners:
        server.accept()[0].close()  # room: the SYNs sent again after ~1 s complete them
    time.sleep(2.0)  # the loop held past the deadline
    await until(lambda: len(got) == 2)
    assert sorted((token, r is not None and r.ok) for token, r, _ in got) == [
        ("a", True),
        ("b", True),
    ]
    assert all(r is not None and r.duration_s > 0.9 for _, r, _ in got)  # the SYN sent again
    waiter.close()
    for server, fillers in listeners:
        for sock in (server, *fillers):
            sock.close()
