"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from healthd import systemd
from healthd.config import parse_text
from healthd.daemon import Daemon
from healthd.ipvs.errors import IpvsTransient
from healthd.ipvs.fake import FakeIpvs
from healthd.model import Observed, Protocol, VirtualServerKey

VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket named by $NOTIFY_SOCKET, as systemd provides it."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram queued on ``sock`` now (a local datagram is queued when sendto returns)."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def next_message(sock: socket.socket) -> str:
    async with asyncio.timeout(10):  # a hang guard, not a timing assertion
        data = await asyncio.get_running_loop().sock_recv(sock, 4096)
    return data.decode()


def test_each_message_is_one_datagram(notify_socket: socket.socket) -> None:
    assert systemd.ready()
    assert systemd.status("3 real servers:\n  2 up")
    assert systemd.stopping()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    ready, status, stopping, reloading = received(notify_socket)
    assert (ready, status, stopping) == ("READY=1", "STATUS=3 real servers: 2 up", "STOPPING=1")
    first, second = reloading.split("\n")
    assert first == "RELOADING=1"
    key, usec = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(usec) <= after


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"healthd-test-{os.getpid()}-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready()
        assert received(sock) == ["READY=1"]


def test_without_systemd_every_call_is_a_quiet_no_op(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.ready()
    assert not systemd.status("x")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not systemd.stopping()  # a send error is not the daemon's problem


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process (we were forked)
    assert systemd.watchdog_interval_s() is None


def test_stall_threshold_from_the_slowest_check() -> None:
    config = parse_text(
        """
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp, interval: 2s, timeout: 1s}]
    real_servers:
      - {name: a, address: 192.168.1.1}
      - name: b
        address: 192.168.1.2
        checks:
          - {type: tcp, interval: 10s, timeout: 3s}
          - {type: tcp, port: 81, interval: 5s, timeout: 4s}
  - name: static
    address: 10.0.0.2
    port: 80
    checks: []
    real_servers: [{name: c, address: 192.168.1.3}]
""",
        "test.yaml",
    )
    assert systemd.stall_after_s(config) == 2 * 10 + 4 + 5
    static = parse_text(
        "virtual_servers: [{name: s, address: 10.0.0.2, port: 80, checks: [],"
        " real_servers: [{name: c, address: 192.168.1.3}]}]",
        "test.yaml",
    )
    assert systemd.stall_after_s(static) == math.inf  # nothing to probe: never stalled


class Steps:
    """A ``sleep`` the test steps: each call reports itself and waits for ``step()``."""

    def __init__(self) -> None:
        self.slept: asyncio.Queue[float] = asyncio.Queue()
        self.go: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        await self.slept.put(seconds)
        await self.go.get()

    async def step(self) -> float:
        """Let the watchdog run one more round; returns once it is asleep again."""
        self.go.put_nowait(None)
        async with asyncio.timeout(10):
            return await self.slept.get()


async def test_watchdog_is_fed_only_while_probes_complete(
    notify_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    last_probe = [1000.0]
    steps = Steps()
    task = asyncio.create_task(
        systemd.watchdog(
            lambda: last_probe[0],
            10.0,
            interval_s=15.0,
            clock=lambda: now[0],
            sleep=steps.sleep,
        )
    )
    try:
        async with asyncio.timeout(10):
            assert await steps.slept.get() == 15.0
        assert received(notify_socket) == ["WATCHDOG=1"]

        for _ in range(3):  # probes keep completing
            now[0] += 15
            last_probe[0] = now[0] - 1
            await steps.step()
            assert received(notify_socket) == ["WATCHDOG=1"]

        now[0] += 15  # the last probe completed 16 s ago: stalled
        await steps.step()
        assert received(notify_socket) == []
        now[0] += 15
        await steps.step()
        assert received(notify_socket) == []
        stalled = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
        assert stalled == [
            "scheduler stalled for 16s: not feeding the systemd watchdog"
            " (systemd restarts healthd when WatchdogSec runs out)"
        ]

        last_probe[0] = now[0]  # progress again (systemd had not yet given up)
        await steps.step()
        assert received(notify_socket) == ["WATCHDOG=1"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_watchdog_does_nothing_when_systemd_wants_none(
    notify_socket: socket.socket,
) -> None:
    async with asyncio.timeout(10):
        await systemd.watchdog(lambda: time.monotonic(), 10.0)  # no WATCHDOG_USEC: returns
    assert received(notify_socket) == []


# ---- the daemon ------------------------------------------------------------------------------


class FailsFirstDump(FakeIpvs):
    """The first pass cannot read the table (as if netlink hiccuped)."""

    failed = False

    async def dump(self, keys: object, like: object = None) -> Observed:  # type: ignore[override]
        if not self.failed:
            self.failed = True
            raise IpvsTransient("ENOBUFS")
        return await super().dump(keys)  # type: ignore[arg-type]


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_daemon_ready_after_first_good_pass_watchdog_while_probing_then_stopping(
    notify_socket: socket.socket,
    backend: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # WatchdogSec=100ms: a ping every 50 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    config = parse_text(
        f"""
metrics: {{enabled: false}}
control: {{enabled: false}}
state_file: {tmp_path}/state.json
reconcile: {{interval: 5s, min_interval: 0s}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    check: {{interval: 100ms, timeout: 50ms, rise: 1, fall: 1}}
    checks: [{{type: tcp}}]
    real_servers: [{{name: web-1, address: 127.0.0.1, port: {backend}}}]
""",
        "test.yaml",
    )
    port = FailsFirstDump()
    daemon = Daemon(config, port)
    run = asyncio.create_task(daemon.run())
    try:
        seen: list[str] = []
        while "READY=1" not in seen:
            seen.append(await next_message(notify_socket))
        # READY=1 came after a successful pass, not the failed first one: the table is there.
        assert port.failed and daemon.reconciler.ready.is_set()
        assert VS in port.snapshot([VS])
        assert "READY=1" not in seen[:-1]

        completed = daemon.scheduler.completed
        while True:  # the watchdog keeps being fed while probes complete
            message = await next_message(notify_socket)
            seen.append(message)
            if message == "WATCHDOG=1" and daemon.scheduler.completed > completed + 2:
                break
        assert any(m.startswith("STATUS=ready: 1 virtual servers, 1 real servers") for m in seen)
    finally:
        daemon.stopping.set()
        async with asyncio.timeout(10):
            await run
    assert "STOPPING=1" in received(notify_socket)
    assert seen.count("READY=1") == 1
