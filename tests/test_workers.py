"""Probes in worker processes: results and delays come back, update() moves probes, a dead worker
is replaced, stopping leaves no process, and the config key selects it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from probing import tcp_key, until

from healthd.autoworkers import AutoScheduler
from healthd.checkspec import CheckTiming, ProbeResult, Reason, Target, TcpCheck
from healthd.config import ConfigError
from healthd.config.parse import parse_text
from healthd.histogram import DELAY_BUCKETS_S, Histogram
from healthd.probes import native
from healthd.probes.native import QuietCount
from healthd.probeworker import SETTLED_FLUSH_S, _Batcher
from healthd.scheduler import PROBES_NICE, Quiet, Scheduler
from healthd.state import ProbeKey
from healthd.workers import WorkerPool, scheduler_for


def _nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])  # the 19th field: nice


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_results_and_delays_come_back_from_the_workers(
    listener: int, refused_port: int
) -> None:
    got: list[tuple[int, Reason, str]] = []
    delays = Histogram(DELAY_BUCKETS_S)

    def on_result(key: ProbeKey, result: ProbeResult) -> None:
        got.append((key.target.port, result.reason, result.detail))

    pool = WorkerPool(
        [tcp_key(listener), tcp_key(refused_port)], on_result, workers=2, on_delays=delays.merge
    )
    task = asyncio.create_task(pool.run())
    try:
        await until(lambda: len({p for p, _, _ in got}) == 2 and len(got) >= 6)
        pids = [w.proc.pid for w in pool._workers if w.proc is not None]
        assert len(pids) == 2 and os.getpid() not in pids
        # nicer than the daemon: the kernel's packet processing and the daemon go first
        own = _nice(os.getpid())
        assert PROBES_NICE > 0 and [_nice(pid) for pid in pids] == [min(own + PROBES_NICE, 19)] * 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert (listener, Reason.OK, f"TCP connect 127.0.0.1:{listener}: connected") in got
    assert (refused_port, Reason.REFUSED, f"TCP connect 127.0.0.1:{refused_port}: "
            "connection refused") in got  # fmt: skip
    assert pool.completed == len(got) and delays.count >= len(got)
    assert not any(alive(pid) for pid in pids)  # stopping stops the workers


async def test_update_moves_probes_in_and_out(listener: int, refused_port: int) -> None:
    seen: list[int] = []
    pool = WorkerPool([tcp_key(listener)], lambda k, r: seen.append(k.target.port), workers=1)
    task = asyncio.create_task(pool.run())
    try:
        await until(lambda: listener in seen)
        assert pool.update([tcp_key(refused_port)]) == (1, 1)
        await until(lambda: refused_port in seen)
        seen.clear()
        await asyncio.sleep(0.4)
        assert set(seen) == {refused_port}
        assert pool.update([tcp_key(refused_port)]) == (0, 0)  # unchanged: nothing moves
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_dead_worker_is_replaced_with_its_probes(
    listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("healthd.workers.RESTART_S", (0.05, 0.05))
    seen: list[int] = []
    pool = WorkerPool([tcp_key(listener)], lambda k, r: seen.append(k.target.port), workers=1)
    task = asyncio.create_task(pool.run())
    try:
        await until(lambda: len(seen) >= 2)
        proc = pool._workers[0].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)  # our own child, by its PID
        await until(lambda: pool._workers[0].proc not in (None, proc))
        count = len(seen)
        await until(lambda: len(seen) >= count + 3)  # the new worker probes the same target
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_probe_once_runs_here(listener: int) -> None:
    pool = WorkerPool([], lambda k, r: None, workers=1)
    result = await pool.probe_once(tcp_key(listener))
    assert result.ok


def test_scheduler_for_picks_in_process_or_workers() -> None:
    inline = scheduler_for(0, [], lambda k, r: None, max_concurrent=10)
    pool = scheduler_for(3, [], lambda k, r: None, max_concurrent=10)
    assert type(inline) is Scheduler
    assert isinstance(pool, WorkerPool) and len(pool._workers) == 3 and pool.workers == 3
    auto = scheduler_for("auto", [], lambda k, r: None, max_concurrent=10)
    assert isinstance(auto, AutoScheduler) and auto.workers == 0


CONFIG = """
probes: {workers: %s}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp}]
    real_servers: [{name: a, address: 192.168.1.101}]
"""


def test_probes_workers_in_the_config() -> None:
    assert parse_text(CONFIG % 2, "x.yaml").probe_workers == 2
    assert parse_text(CONFIG % 0, "x.yaml").probe_workers == 0
    assert parse_text(CONFIG % "auto", "x.yaml").probe_workers == "auto"
    default = parse_text(CONFIG.replace("probes: {workers: %s}\n", ""), "x.yaml")
    assert default.probe_workers == "auto"
    expected = r"x\.yaml:2: probes\.workers: must be auto or an integer 0\.\.64"
    for bad in ("65", "many", "-1"):
        with pytest.raises(ConfigError, match=expected):
            parse_text(CONFIG % bad, "x.yaml")
    with pytest.raises(ConfigError, match=r"x\.yaml:2: probes\.workers: must be a single value"):
        parse_text(CONFIG % "[2]", "x.yaml")


def test_probes_engine_threads_in_the_config() -> None:
    threads = CONFIG.replace("{workers: %s}", "{engine_threads: %s}")
    assert parse_text(threads % 2, "x.yaml").probe_engine_threads == 2
    assert parse_text(threads % 0, "x.yaml").probe_engine_threads == 0
    assert parse_text(threads % "auto", "x.yaml").probe_engine_threads == "auto"
    default = parse_text(CONFIG.replace("probes: {workers: %s}\n", ""), "x.yaml")
    assert default.probe_engine_threads == "auto"
    expected = r"x\.yaml:2: probes\.engine_threads: must be auto or an integer 0\.\.64"
    for bad in ("65", "yes", "-1"):
        with pytest.raises(ConfigError, match=expected):
            parse_text(threads % bad, "x.yaml")


@pytest.mark.parametrize(("setting", "threads"), [(2, 2), ("auto", 0)])
async def test_scheduler_for_runs_the_engine_in_the_threads_it_is_given(
    listener: int, setting: int | str, threads: int
) -> None:
    from healthd import _tcpengine  # noqa: F401  (built: an ImportError fails the test)

    got: list[bool] = []
    scheduler = scheduler_for(
        0, [tcp_key(listener, 0.05)], lambda k, r: got.append(r.ok), max_concurrent=10,
        engine_threads=setting,  # type: ignore[arg-type]
    )  # fmt: skip
    task = asyncio.create_task(scheduler.run())
    try:
        await until(lambda: len(got) >= 2)
        assert got[0] and scheduler.engine_threads == threads  # auto: only with workers: auto
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_daemon_runs_its_probes_in_workers(tmp_path: Path, listener: int) -> None:
    from healthd.daemon import Daemon
    from healthd.ipvs.fake import FakeIpvs

    config = parse_text(
        f"""
probes: {{workers: 1}}
metrics: {{enabled: false}}
control: {{enabled: false}}
state_file: {tmp_path}/state.json
defaults: {{check: {{interval: 100ms, timeout: 50ms, rise: 1, fall: 1}}}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{{type: tcp}}]
    real_servers: [{{name: a, address: 127.0.0.1, port: {listener}}}]
""",
        "test.yaml",
    )
    daemon = Daemon(config, FakeIpvs())
    assert isinstance(daemon.scheduler, WorkerPool)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.states().get(("web", "a")) == "up")
    finally:
        daemon.stopping.set()
        await asyncio.wait_for(task, 20)
    assert all(w.proc is None for w in daemon.scheduler._workers)


async def test_stopping_a_busy_worker_is_quick_and_clean(refused_port: int) -> None:
    """Results still in the pipe when the daemon stops must not keep wait() hanging."""
    keys = [
        ProbeKey(TcpCheck(port=refused_port), Target("127.0.0.1", p), CheckTiming(0.02, 0.01))
        for p in range(1, 801)
    ]
    stalled = []

    def on_result(key: ProbeKey, result: ProbeResult) -> None:
        if not stalled and pool.completed > 20000:
            stalled.append(1)
            time.sleep(0.5)  # a busy daemon: results pile up in the pipe meanwhile

    pool = WorkerPool(keys, on_result, workers=1)
    task = asyncio.create_task(pool.run())
    await until(lambda: bool(stalled))
    proc = pool._workers[0].proc
    assert proc is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert loop.time() - started < 3
    assert proc.returncode == 0  # it exited by itself at the end of its input, not killed


class _Frames:
    """A worker's output pipe: the batches written, unpickled, with the loop time of each."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[tuple[object, ...]]]] = []

    def write(self, data: bytes) -> None:
        _in_flight, rows, _delays, _drained, _progressed = pickle.loads(data[4:])
        self.batches.append((asyncio.get_running_loop().time(), rows))


async def test_a_result_that_may_change_a_verdict_is_sent_at_once_a_settled_one_later() -> None:
    # rise 2, fall 3: after more than 3 results in a row with one outcome, a further one can
    # change no verdict, whatever state the daemon holds
    key = ProbeKey(TcpCheck(), Target("127.0.0.1", 1), CheckTiming(1.0, 0.5, rise=2, fall=3))
    out = _Frames()
    batcher = _Batcher(out, [])
    batcher._ids[key] = 7
    ok = ProbeResult(True, Reason.OK, "connected", 0.001)
    failed = ProbeResult(False, Reason.REFUSED, "connection refused", 0.001)
    loop = asyncio.get_running_loop()

    async def send(result: ProbeResult) -> float:
        """Loop seconds until the batch holding ``result`` was written."""
        before, t0 = len(out.batches), loop.time()
        batcher.on_result(key, result)
        await until(lambda: len(out.batches) > before, timeout_s=5.0)
        assert [row[1] for row in out.batches[-1][1]] == [result.ok]
        return out.batches[-1][0] - t0

    for _ in range(3):  # the first results of a probe: each could change its verdict
        assert await send(ok) < SETTLED_FLUSH_S / 2
    settled = await send(ok)  # the fourth OK in a row changes nothing
    assert settled >= SETTLED_FLUSH_S * 0.9
    # the first failure after a run of OKs, and the next ones up to fall, go out at once
    for _ in range(3):
        assert await send(failed) < SETTLED_FLUSH_S / 2
    assert await send(failed) >= SETTLED_FLUSH_S * 0.9
    # a settled result waiting in a batch does not hold back one that matters
    batcher.on_result(key, failed)
    await asyncio.sleep(0.01)
    before, t0 = len(out.batches), loop.time()
    batcher.on_result(key, ok)
    await until(lambda: len(out.batches) > before, timeout_s=5.0)
    assert [row[1] for row in out.batches[-1][1]] == [False, True]
    assert out.batches[-1][0] - t0 < SETTLED_FLUSH_S / 2


async def test_stopping_the_workers_logs_no_error(
    listener: int, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []
    pool = WorkerPool([tcp_key(listener)], lambda k, r: seen.append(1), workers=2)
    task = asyncio.create_task(pool.run())
    await until(lambda: len(seen) >= 2)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    gc.collect()  # a future whose exception nobody retrieved is reported when collected
    await asyncio.sleep(0.05)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_worker_counts_settled_successes_and_hands_them_over_in_order() -> None:
    """Quiet successes in a probe worker: once settled, a TCP check's successes are counted in
    the worker (not sent one by one), the watchdog still sees progress, a drain (a scrape)
    brings the counts, and a failure comes after what was counted before it."""
    assert native.available(), "the C engine (healthd/_tcpengine.c) is not built"
    events: list[tuple[str, int]] = []

    def counted(pairs: Sequence[tuple[ProbeKey, QuietCount]]) -> None:
        events.extend(("counted", count.n) for _, count in pairs)

    quiet = Quiet(lambda k, r: False, counted, lambda c, n, t: None, (0.001, 0.01, 0.1, 1.0))
    server = socket.create_server(("127.0.0.1", 0), backlog=1024)
    port = server.getsockname()[1]
    key = ProbeKey(TcpCheck(), Target("127.0.0.1", port), CheckTiming(0.05, 0.5, rise=1, fall=1))
    pool = WorkerPool(
        [key], lambda k, r: events.append(("result", int(r.ok))), workers=1, quiet=quiet
    )
    task = asyncio.create_task(pool.run())
    try:
        await until(lambda: len(events) >= 2)  # settled from the second success on
        await asyncio.sleep(0.2)
        reported, progress = len(events), pool.last_progress
        await asyncio.sleep(1.5)  # ~30 checks
        assert len(events) == reported <= 4  # counted in the worker, none sent
        assert pool.last_progress > progress + 0.4  # the worker's heartbeat
        for step in pool.drain_slices():  # what a scrape does first
            if step is not None:
                await asyncio.wait_for(step, 2)
        assert events[-1][0] == "counted" and events[-1][1] >= 20
        assert pool.completed == sum(n for kind, n in events if kind == "counted") + reported
        await asyncio.sleep(0.3)  # more successes counted, not drained
        server.close()  # the backend goes away
        await until(lambda: ("result", 0) in events)
        failure = events.index(("result", 0))
        assert events[failure - 1][0] == "counted" and events[failure - 1][1] > 0
    finally:
        server.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_stopping_worker_hands_over_what_its_quiet_checks_counted() -> None:
    """Stopping the pool (a move to more workers, a reload that restarts them) loses no count:
    the worker drains at exit and the daemon reads its output to the end."""
    assert native.available(), "the C engine (healthd/_tcpengine.c) is not built"
    counted: list[int] = []
    reported: list[bool] = []
    quiet = Quiet(
        lambda k, r: False,
        lambda pairs: counted.extend(c.n for _, c in pairs),
        lambda c, n, t: None,
        (0.01, 1.0),
    )
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as server:
        key = ProbeKey(
            TcpCheck(),
            Target("127.0.0.1", server.getsockname()[1]),
            CheckTiming(0.05, 0.5, rise=1, fall=1),
        )
        pool = WorkerPool([key], lambda k, r: reported.append(r.ok), workers=1, quiet=quiet)
        task = asyncio.create_task(pool.run())
        await until(lambda: len(reported) >= 2)
        await asyncio.sleep(1.0)  # ~20 successes counted in the worker, none drained yet
        assert counted == []
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sum(counted) >= 10
    assert pool.completed == len(reported) + sum(counted)
