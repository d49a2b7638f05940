"""The C engine for plain TCP checks (``healthd._tcpengine`` through ``probes.native``): the
same results as the Python probe, sockets always closed, its own schedule, hold and limits.

The extension must have been built (``pip install -e .`` builds it): an ImportError fails
these tests rather than skipping them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import pytest
from probing import close_seen_by, full_listener

from healthd import _tcpengine
from healthd.checkspec import ProbeResult, Reason, Target, TcpCheck
from healthd.histogram import DELAY_BUCKETS_S
from healthd.probes.native import NativeTcp
from healthd.probes.tcp import probe_tcp

Got = list[tuple[str, ProbeResult, float]]
THREADS = {"n": 0}


@pytest.fixture(autouse=True, params=[0, 1, 2], ids=["loop", "thread", "2threads"])
def threads(request: pytest.FixtureRequest) -> int:
    """Every test runs three times: the engine run by the event loop, in a thread of its own,
    and as two engines in two threads."""
    THREADS["n"] = request.param
    return int(request.param)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sockets() -> set[tuple[int, str]]:
    """(descriptor, socket inode) of every socket this process holds."""
    held = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            link = os.readlink(f"/proc/self/fd/{name}")
            if link.startswith("socket:"):
                held.add((int(name), link))
    return held


def engine(got: Got, max_in_flight: int = 1024, jitter: float = 0.0) -> NativeTcp[str]:
    def done(token: str, result: ProbeResult, delay_s: float) -> None:
        got.append((token, result, delay_s))

    loop = asyncio.get_running_loop()
    return NativeTcp(
        loop, done, max_in_flight=max_in_flight, jitter=jitter, seed=7, threads=THREADS["n"]
    )


async def wait_for(predicate: object, timeout_s: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


async def test_results_read_as_the_python_probe_says_them(
    listener: int, refused_port: int, stalled_port: int
) -> None:
    got: Got = []
    tcp = engine(got)
    now = asyncio.get_running_loop().time()
    targets = {
        "open": Target("127.0.0.1", listener),
        "refused": Target("127.0.0.1", refused_port),
        "stalled": Target("127.0.0.1", stalled_port),
    }
    for name, target in targets.items():
        tcp.add(name, TcpCheck(), target, 10.0, 0.2, now)
    try:
        await wait_for(lambda: len(got) == 3)
    finally:
        tcp.close()
    by_name = {name: result for name, result, _ in got}
    for name, target in targets.items():
        if name == "stalled":
            expected = ProbeResult(
                False, Reason.TIMEOUT, f"TCP connect {target.endpoint()}: timed out after 0.2s", 0.2
            )
        else:
            expected = await probe_tcp(TcpCheck(), target)
        assert by_name[name].says_the_same_as(expected), (name, by_name[name], expected)
    assert by_name["open"].ok and by_name["open"].reason is Reason.OK
    assert by_name["refused"].reason is Reason.REFUSED
    assert 0.0 <= by_name["open"].duration_s < 0.2


@pytest.mark.parametrize("close", ["reset", "graceful"])
async def test_the_real_server_sees_the_close_the_check_asks_for(close: str) -> None:
    """Both ways a connect ends in the engine: at once (a loopback listener with room), and
    later (a full accept queue; the SYN sent again after ~1 s completes it)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        got: Got = []
        tcp = engine(got)
        target = Target("127.0.0.1", server.getsockname()[1])
        tcp.add("now", TcpCheck(close=close), target, 10.0, 1.0, asyncio.get_running_loop().time())
        try:
            await wait_for(lambda: len(got) == 1)
        finally:
            tcp.close()
        assert got[0][1].ok
        assert close_seen_by(server) == close
    server, fillers = full_listener(2)
    try:
        await asyncio.sleep(0.05)
        got = []
        tcp = engine(got)
        target = Target("127.0.0.1", server.getsockname()[1])
        tcp.add("late", TcpCheck(close=close), target, 10.0, 5.0, asyncio.get_running_loop().time())
        try:
            await wait_for(lambda: tcp.in_flight == 1)
            for conn in (server.accept()[0], server.accept()[0]):  # room in the queue again
                conn.close()
            await wait_for(lambda: len(got) == 1)
        finally:
            tcp.close()
        assert got[0][1].ok
        assert close_seen_by(server) == close
    finally:
        for sock in (server, *fillers):
            sock.close()


async def test_a_check_port_overrides_the_real_servers_and_ipv6_works(
    listener: int, ipv6: None
) -> None:
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as server6:
        port6 = server6.getsockname()[1]
        got: Got = []
        tcp = engine(got)
        now = asyncio.get_running_loop().time()
        tcp.add("v4", TcpCheck(port=listener), Target("127.0.0.1", 1), 10.0, 1.0, now)
        tcp.add("v6", TcpCheck(), Target("::1", port6), 10.0, 1.0, now)
        try:
            await wait_for(lambda: len(got) == 2)
        finally:
            tcp.close()
    results = {name: result for name, result, _ in got}
    assert results["v4"].ok and f"127.0.0.1:{listener}" in results["v4"].detail
    assert results["v6"].ok and f"[::1]:{port6}" in results["v6"].detail


async def test_checks_repeat_every_interval_with_their_delay(refused_port: int) -> None:
    got: Got = []
    tcp = engine(got)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tcp.add("a", TcpCheck(), Target("127.0.0.1", refused_port), 0.1, 0.05, t0 + 0.05)
    await asyncio.sleep(0.52)
    tcp.close()
    # due at 0.05, 0.15, ... 0.45: five checks (no jitter), each started on time
    assert len(got) == 5
    assert all(r.reason is Reason.REFUSED for _, r, _ in got)
    assert max(delay for _, _, delay in got) < 0.05


async def test_in_its_thread_the_engine_keeps_its_schedule_while_the_loop_is_busy(
    refused_port: int, threads: int
) -> None:
    got: Got = []
    tcp = engine(got)
    loop = asyncio.get_running_loop()
    tcp.add("a", TcpCheck(), Target("127.0.0.1", refused_port), 0.1, 0.05, loop.time() + 0.05)
    await asyncio.sleep(0.12)  # one check, at 0.05
    time.sleep(0.6)  # the event loop busy with something else: checks due at 0.15 .. 0.65
    await asyncio.sleep(0.05)
    tcp.close()
    delays = [delay for _, _, delay in got]
    if threads:  # they ran on time meanwhile; their results came once the loop was back
        assert len(got) >= 7 and max(delays) < 0.05
    else:  # nothing ran while the loop was held: the next check started ~0.5 s late
        assert len(got) <= 3 and max(delays) > 0.4


async def test_the_engine_stops_starting_checks_while_its_results_pile_up(
    refused_port: int, threads: int
) -> None:
    got: Got = []
    tcp = engine(got)
    loop = asyncio.get_running_loop()
    for i in range(400):  # 20 000 checks a second
        tcp.add(str(i), TcpCheck(), Target("127.0.0.1", refused_port), 0.02, 0.05, loop.time())
    await asyncio.sleep(0.1)
    before = len(got)
    time.sleep(3.0)  # nobody takes the results: ~60 000 checks due meanwhile
    await asyncio.sleep(0.3)
    tcp.close()
    after = got[before:]
    if threads:  # each engine held once PENDING_MAX results waited: not the ~66 000 due
        assert _tcpengine.PENDING_MAX <= len(after) <= threads * _tcpengine.PENDING_MAX + 6_000
    else:  # on the loop, nothing ran meanwhile
        assert len(after) <= 6_000 + 400
    assert max(delay for _, _, delay in after) > 1.0


async def test_a_removed_check_reports_nothing_and_leaves_no_socket(
    stalled_port: int, threads: int
) -> None:
    got: Got = []
    own = 4 * threads or 2  # per engine its epoll set and timer; in a thread, two eventfds
    fds = open_fds()
    tcp = engine(got)
    now = asyncio.get_running_loop().time()
    handles = [
        tcp.add(str(i), TcpCheck(), Target("127.0.0.1", stalled_port), 10.0, 0.3, now)
        for i in range(5)
    ]
    await wait_for(lambda: tcp.in_flight == 5)
    assert open_fds() == fds + own + 5  # five connects
    for handle in handles[:3]:
        tcp.remove(handle)
    assert tcp.in_flight == 2 and open_fds() == fds + own + 2
    await wait_for(lambda: len(got) == 2)
    assert sorted(token for token, _, _ in got) == ["3", "4"]
    assert all(r.reason is Reason.TIMEOUT for _, r, _ in got)
    assert open_fds() == fds + own
    tcp.close()
    assert open_fds() == fds


async def test_close_closes_every_connect_in_progress(stalled_port: int) -> None:
    got: Got = []
    fds = open_fds()
    tcp = engine(got)
    now = asyncio.get_running_loop().time()
    for i in range(4):
        tcp.add(str(i), TcpCheck(), Target("127.0.0.1", stalled_port), 10.0, 5.0, now)
    await wait_for(lambda: tcp.in_flight == 4)
    tcp.close()
    assert open_fds() == fds and got == []


async def test_at_most_max_in_flight_connects_wait_and_the_rest_follow(stalled_port: int) -> None:
    got: Got = []
    tcp = engine(got, max_in_flight=2)
    now = asyncio.get_running_loop().time()
    for i in range(5):
        tcp.add(str(i), TcpCheck(), Target("127.0.0.1", stalled_port), 10.0, 0.1, now)
    peak = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    while len(got) < 5 and loop.time() < deadline:
        peak = max(peak, tcp.in_flight)
        await asyncio.sleep(0.01)
    tcp.close()
    assert peak == 2
    assert len(got) == 5
    # the last two started after two rounds of timeouts: their schedule delay says so
    assert max(delay for _, _, delay in got) >= 0.18


async def test_a_failed_checks_retry_goes_before_a_backlog_of_healthy_checks(
    refused_port: int,
) -> None:
    """Behind schedule (here: held for a while), the healthy checks' planned times slip; the
    retry of a check that failed, due one interval after it began, starts first even though
    the backlog's checks were due before it, so a failure is confirmed (fall) on time."""
    got: Got = []
    tcp = engine(got)
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0), backlog=512) as server:
        t0 = loop.time()
        tcp.add("failing", TcpCheck(), Target("127.0.0.1", refused_port), 0.3, 0.2, t0)
        for i in range(100):  # due before the failing check's retry (t0 + 0.3)
            healthy = Target("127.0.0.1", server.getsockname()[1])
            tcp.add(f"ok{i}", TcpCheck(), healthy, 10.0, 0.2, t0 + 0.2)
        await wait_for(lambda: len(got) == 1)
        tcp.hold(True)  # falls behind: nothing starts until t0 + 0.45
        await asyncio.sleep(t0 + 0.45 - loop.time())
        tcp.hold(False)
        await wait_for(lambda: len(got) == 102)
        tcp.close()
    order = [name for name, _, _ in got]
    assert order[:2] == ["failing", "failing"], order[:5]
    assert all(name.startswith("ok") for name in order[2:])
    assert all(result.ok for name, result, _ in got if name != "failing")
    # the retry was planned from the failed check's start, 0.3 s on: 0.15 s late, not more
    assert 0.1 <= got[1][2] < 0.3


async def test_after_a_failure_the_checks_until_rise_successes_also_go_before_a_backlog() -> None:
    """A check in question (failed, then fewer than rise successes since) keeps its interval
    when the engine is behind: here rise 2, so the recovery's second success comes before
    healthy checks that were due earlier, once the first success brought it back."""
    got: Got = []
    tcp = engine(got)
    loop = asyncio.get_running_loop()
    with socket.socket() as flip, socket.create_server(("127.0.0.1", 0), backlog=512) as server:
        flip.bind(("127.0.0.1", 0))  # refuses until it listens
        flapping = Target("127.0.0.1", flip.getsockname()[1])
        healthy = Target("127.0.0.1", server.getsockname()[1])
        t0 = loop.time()
        tcp.add("flip", TcpCheck(), flapping, 0.3, 0.2, t0, 2)
        for i in range(50):
            tcp.add(f"a{i}", TcpCheck(), healthy, 10.0, 0.2, t0 + 0.2)  # before the retry
            tcp.add(f"b{i}", TcpCheck(), healthy, 10.0, 0.2, t0 + 0.55)  # before the 3rd check
        await wait_for(lambda: len(got) == 1)
        flip.listen(16)  # back: the next checks succeed
        tcp.hold(True)
        await asyncio.sleep(t0 + 0.45 - loop.time())
        tcp.hold(False)  # the retry (due 0.3) before the a's (due 0.2)
        await wait_for(lambda: len(got) == 52)
        tcp.hold(True)
        await asyncio.sleep(t0 + 0.9 - loop.time())
        tcp.hold(False)  # flip's 3rd check (due ~0.75, in question) before the b's (due 0.55)
        await wait_for(lambda: len(got) == 103)
        tcp.close()
    order = [name for name, _, _ in got]
    assert order[0] == order[1] == "flip" and order[52] == "flip", order[50:55]
    flips = [result for name, result, _ in got if name == "flip"]
    assert [r.ok for r in flips] == [False, True, True]


async def test_a_held_engine_starts_nothing_until_released(refused_port: int) -> None:
    got: Got = []
    tcp = engine(got)
    now = asyncio.get_running_loop().time()
    tcp.hold(True)
    tcp.add("a", TcpCheck(), Target("127.0.0.1", refused_port), 10.0, 1.0, now)
    await asyncio.sleep(0.2)
    assert got == []
    tcp.hold(False)
    await wait_for(lambda: len(got) == 1)
    tcp.close()
    assert got[0][2] >= 0.2  # started 0.2 s late, and says so


async def test_addresses_the_engine_cannot_take_are_refused(listener: int) -> None:
    tcp = engine([])
    now = asyncio.get_running_loop().time()
    with pytest.raises(ValueError):
        tcp.add("x", TcpCheck(), Target("fe80::1%lo", listener), 1.0, 1.0, now)
    with pytest.raises(ValueError):
        tcp.add("x", TcpCheck(), Target("127.0.0.1", listener), 0.0, 1.0, now)
    tcp.close()


async def test_a_stale_event_of_a_closed_socket_never_finishes_its_successor() -> None:
    """A child between fork and exec holds a copy of a connect's socket: closing ours leaves its
    epoll entry alive, and when the backend answers it fires.  The slot's next user (here a new
    target in the removed one's slot, its connect in progress) must not take it as its own."""
    from probing import full_listener

    first, first_fillers = full_listener(3)
    second, second_fillers = full_listener(3)
    got: Got = []
    tcp = engine(got)
    loop = asyncio.get_running_loop()
    try:
        target = Target("127.0.0.1", first.getsockname()[1])
        before = sockets()
        handle = tcp.add("old", TcpCheck(), target, 10.0, 5.0, loop.time())
        await wait_for(lambda: tcp.in_flight == 1)
        ((fd, _),) = sockets() - before  # the connect's socket
        held = os.dup(fd)  # as a forked child would
        tcp.remove(handle)
        target = Target("127.0.0.1", second.getsockname()[1])
        assert tcp.add("new", TcpCheck(), target, 10.0, 2.5, loop.time()) == handle
        await wait_for(lambda: tcp.in_flight == 1)
        first.close()  # the held socket's next SYN (~1 s after the first) is refused
        await wait_for(lambda: len(got) == 1, timeout_s=4.0)
        os.close(held)
    finally:
        tcp.close()
        for sock in (first, second, *first_fillers, *second_fillers):
            sock.close()
    assert [(token, r.reason) for token, r, _ in got] == [("new", Reason.TIMEOUT)]


def test_the_engine_refuses_use_after_close() -> None:
    e = _tcpengine.Engine(8, 0.1, 1)
    e.close()
    with pytest.raises(ValueError):
        e.run()
    with pytest.raises(ValueError):
        e.add("127.0.0.1", 1, 1.0, 1.0, 0.0)


def quiet_engine(got: Got) -> NativeTcp[str]:
    def done(token: str, result: ProbeResult, delay_s: float) -> None:
        got.append((token, result, delay_s))

    return NativeTcp(
        asyncio.get_running_loop(),
        done,
        max_in_flight=16,
        jitter=0.0,
        seed=7,
        duration_bounds=(0.001, 0.5),
        delay_bounds=DELAY_BUCKETS_S,
        threads=THREADS["n"],
    )


async def test_a_quiet_check_counts_its_successes_and_reports_its_first_failure() -> None:
    got: Got = []
    tcp = quiet_engine(got)
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    now = asyncio.get_running_loop().time()
    handle = tcp.add(
        "web", TcpCheck(), Target("127.0.0.1", server.getsockname()[1]), 0.02, 0.2, now
    )
    try:
        await wait_for(lambda: len(got) == 1)
        assert got[0][1].ok
        tcp.quiet(handle)
        await asyncio.sleep(0.3)
        assert len(got) == 1  # ~15 successes, none reported
        counted, (delay_counts, delays_n, _), done = tcp.drain(100)
        assert done and [token for token, _ in counted] == ["web"]
        count = counted[0][1]
        assert count.n >= 5
        assert sum(count.counts) == count.n  # each under 0.5 s, by bucket
        assert 0 < count.total_s < 0.5 * count.n and count.last_duration_s <= count.total_s
        assert time.time() - 1 < count.last_end_wall <= time.time()
        assert delays_n == count.n and sum(delay_counts) <= delays_n
        server.close()  # the next connect is refused: reported, and the check is loud again
        await wait_for(lambda: len(got) == 3)
        assert [result.reason for _, result, _ in got[1:]] == [Reason.REFUSED] * 2
    finally:
        tcp.close()
        server.close()


async def test_drain_goes_a_slice_of_checks_at_a_time() -> None:
    got: Got = []
    tcp = quiet_engine(got)
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    port = server.getsockname()[1]
    now = asyncio.get_running_loop().time()
    handles = [
        tcp.add(name, TcpCheck(), Target("127.0.0.1", port), 0.02, 0.2, now) for name in "abc"
    ]
    try:
        await wait_for(lambda: len(got) == 3)
        for handle in handles:
            tcp.quiet(handle)
        await asyncio.sleep(0.2)
        slices = []
        while True:
            counted, _, done = tcp.drain(2)
            slices.append(sorted(token for token, _ in counted))
            if done:
                break
        # each check once, at most two a call (one engine: a and b, then c)
        assert sorted(token for piece in slices for token in piece) == ["a", "b", "c"]
        assert len(slices) == 2
        assert all(len(piece) <= 2 for piece in slices)
        assert len(got) == 3
    finally:
        tcp.close()
        server.close()
