"""The scheduler with the built-in probes: TCP checks decided on the spot run without a task,
connects still in progress wait on loop callbacks under the timeout (no task either), and the
timer heap keeps cadence."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time

import pytest
from probing import full_listener

from healthd.checkspec import CheckTiming, HttpCheck, ProbeResult, Reason, Target, TcpCheck
from healthd.probes import native
from healthd.scheduler import Scheduler
from healthd.state import ProbeKey


@pytest.fixture(autouse=True, params=["native", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: plain TCP checks in the C engine (probes.native; it must have
    been built) and in Python (the fallback where it was not)."""
    if request.param == "native":
        from healthd import _tcpengine  # noqa: F401  (an ImportError fails the test)

    monkeypatch.setattr(native, "available", lambda: request.param == "native")
    return str(request.param)


def tcp_key(port: int, interval_s: float = 0.1, timeout_s: float = 0.05) -> ProbeKey:
    return ProbeKey(TcpCheck(), Target("127.0.0.1", port), CheckTiming(interval_s, timeout_s))


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class LowestRandom(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_decided_tcp_checks_need_no_task(listener: int, refused_port: int) -> None:
    got: list[tuple[int, Reason]] = []
    tasks_seen: list[int] = []
    delays: list[float] = []

    def on_result(key: ProbeKey, result: ProbeResult) -> None:
        got.append((key.target.port, result.reason))
        tasks_seen.append(len(asyncio.all_tasks()))

    keys = [tcp_key(listener), tcp_key(refused_port)]
    s = Scheduler(keys, on_result, jitter=0.0, on_delay=delays.append)
    baseline = len(asyncio.all_tasks())  # this test's task
    await run_for(s, 0.55)
    assert got.count((listener, Reason.OK)) >= 4
    assert got.count((refused_port, Reason.REFUSED)) >= 4
    assert set(tasks_seen) == {baseline + 1}  # only the scheduler's own run() task
    assert s.in_flight == 0 and s.completed == len(got) and len(delays) == len(got)
    assert max(delays) < 0.05


async def test_a_connect_in_progress_times_out_and_leaves_nothing(stalled_port: int) -> None:
    got: list[ProbeResult] = []
    fds = len(os.listdir("/proc/self/fd"))
    s = Scheduler([tcp_key(stalled_port, 0.2, 0.1)], lambda k, r: got.append(r), jitter=0.0)
    await run_for(s, 0.75)
    assert len(got) >= 2
    assert all(r.reason is Reason.TIMEOUT for r in got)
    assert "timed out after 0.1s" in got[0].detail
    await asyncio.sleep(0)
    assert other_tasks() == set()
    assert len(os.listdir("/proc/self/fd")) == fds  # every probe socket closed


async def test_a_connect_in_progress_that_completes_is_ok_without_a_task() -> None:
    """A listener whose accept queue is full leaves the probe's connect in progress; once the
    queue has room, the retransmitted SYN (after ~1 s) completes it."""
    server, fillers = full_listener(2)
    port = server.getsockname()[1]
    got: list[ProbeResult] = []
    fds = len(os.listdir("/proc/self/fd"))
    s = Scheduler([tcp_key(port, 5.0, 4.0)], lambda k, r: got.append(r), rng=LowestRandom())
    task = asyncio.create_task(s.run())
    try:
        await asyncio.sleep(0.05)
        assert s.in_flight == 1 and not got  # in progress
        assert other_tasks() == {task}  # waited for without a task of its own
        for conn in (server.accept()[0], server.accept()[0]):  # room in the queue again
            conn.close()
        for _ in range(300):
            await asyncio.sleep(0.02)
            if got:
                break
        assert [r.reason for r in got] == [Reason.OK], got
        assert "connected" in got[0].detail
        assert s.in_flight == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for sock in (server, *fillers):
            sock.close()
    assert len(os.listdir("/proc/self/fd")) == fds - 3  # the probe's socket closed too


async def test_stopping_during_a_connect_in_progress_closes_it(stalled_port: int) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    s = Scheduler([tcp_key(stalled_port, 1.0, 0.9)], lambda k, r: None, jitter=0.0)
    task = asyncio.create_task(s.run())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if s.in_flight:
            break
    assert s.in_flight == 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(os.listdir("/proc/self/fd")) == fds
    assert other_tasks() == set()


async def test_waiting_probes_start_in_order_when_a_slot_frees(stalled_port: int) -> None:
    """max_concurrent counts probes that wait on the network; the rest wait their turn."""
    got: list[int] = []
    keys = [tcp_key(stalled_port, 1.0, 0.1) for _ in range(1)]
    keys += [
        ProbeKey(TcpCheck(port=stalled_port), Target("127.0.0.1", p), CheckTiming(1.0, 0.1))
        for p in (1, 2)
    ]
    delays: list[float] = []
    s = Scheduler(
        keys,
        lambda k, r: got.append(k.target.port),
        max_concurrent=1,
        rng=LowestRandom(),  # every first run due at once
        on_delay=delays.append,
    )
    await run_for(s, 1.3)
    assert sorted(got[:3]) == sorted([stalled_port, 1, 2])  # every probe ran, one at a time
    # those that waited for the slot report it as schedule delay
    assert delays[:3] == pytest.approx([0, 0.1, 0.2], abs=0.03)


async def test_an_http_check_reports_through_the_scheduler(refused_port: int) -> None:
    got: list[ProbeResult] = []
    key = ProbeKey(HttpCheck(), Target("127.0.0.1", refused_port), CheckTiming(0.1, 0.05))
    s = Scheduler([key], lambda k, r: got.append(r), jitter=0.0)
    await run_for(s, 0.35)
    assert got and all(r.reason is Reason.REFUSED for r in got)


async def test_jitter_keeps_the_average_interval(listener: int) -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()
    s = Scheduler(
        [tcp_key(listener, 0.05, 0.04)],
        lambda k, r: times.append(loop.time()),
        jitter=0.2,
        rng=random.Random(1),
    )
    await run_for(s, 1.05)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 15 <= len(times) <= 22
    # the times are when results came in: a result held up by a busy moment (CI) lengthens one
    # gap and shortens the next by as much, so both bounds get the same slack
    assert min(gaps) > 0.05 * 0.75 - 0.02 and max(gaps) < 0.05 * 1.25 + 0.02


async def test_held_probes_wait_and_report_their_delay(listener: int) -> None:
    got: list[float] = []
    delays: list[float] = []
    loop = asyncio.get_running_loop()
    s = Scheduler(
        [tcp_key(listener, 0.05, 0.04)],
        lambda k, r: got.append(loop.time()),
        rng=LowestRandom(),
        on_delay=delays.append,
    )
    task = asyncio.create_task(s.run())
    try:
        await asyncio.sleep(0.12)
        assert got
        s.hold(True)
        held_at = loop.time()
        await asyncio.sleep(0.3)
        assert all(t <= held_at + 0.001 for t in got)  # nothing started while held
        count = len(got)
        s.hold(False)
        await asyncio.sleep(0.12)
        assert len(got) > count
        assert max(delays) >= 0.2  # the probe that waited says so
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_full_results_pipe_holds_the_workers_scheduler() -> None:
    from healthd.probeworker import _Output

    s = Scheduler([], lambda k, r: None)
    output = _Output([s])
    output.pause_writing()
    assert s._held
    output.resume_writing()
    assert not s._held


async def test_a_wake_with_many_slow_starts_lets_the_rest_of_the_loop_run(
    refused_port: int,
) -> None:
    # 200 probes due at once and each start made slow (1 ms, as on an emulated CPU): the loop
    # must get control back between batches, or a reconcile pass waiting on the kernel sits
    # behind all 200 (here: 200 ms).

    keys = [
        ProbeKey(TcpCheck(), Target("127.0.0.1", refused_port), CheckTiming(5.0 + i / 1e6, 1.0))
        for i in range(200)
    ]
    order: list[str] = []

    def slow(key: ProbeKey, result: ProbeResult) -> None:
        time.sleep(0.001)
        order.append("probe")

    class AllAtOnce(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a  # no stagger: every probe is due at the start

    s = Scheduler(keys, slow, jitter=0.0, rng=AllAtOnce())
    task = asyncio.create_task(s.run())
    while not order:
        await asyncio.sleep(0)
    order.append("other")  # this task ran while probes of the first wake were still due
    while len(order) < 201:
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert order.index("other") < 60


async def test_probes_due_within_a_few_ms_share_a_wake_up(refused_port: int) -> None:
    # Every wake-up costs a loop trip; a probe due 5 ms after another (interval 1 s) starts with
    # it, a probe due 100 ms later does not.
    offsets = iter([0.100, 0.105, 0.200])

    class Planned(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return next(offsets) if b > 0.5 else 0.0

    keys = [
        ProbeKey(TcpCheck(), Target("127.0.0.1", refused_port), CheckTiming(1.0 + i / 1e6, 0.5))
        for i in range(3)
    ]
    started: dict[float, float] = {}
    loop = asyncio.get_running_loop()
    s = Scheduler(
        keys, lambda k, r: started.setdefault(k.timing.interval_s, loop.time()), rng=Planned()
    )
    await run_for(s, 0.35)
    first, second, third = (started[k.timing.interval_s] for k in keys)
    assert abs(second - first) < 0.002  # one wake-up
    assert third - first > 0.09
