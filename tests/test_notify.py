"""notify commands: real scripts, their environment, timeouts, order, and a daemon that never
waits for them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from healthd.checkspec import ProbeResult, Reason
from healthd.config import parse_text
from healthd.daemon import Daemon
from healthd.events import EventLog
from healthd.ipvs.fake import FakeIpvs
from healthd.model import Health, Protocol, VirtualServerKey
from healthd.notify import Notification, Notifier, notify_env, pool_health

VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Let the loop run until ``predicate()`` holds (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def pid_files() -> Iterator[list[Path]]:
    """Files naming pids a test spawned: whatever still runs afterwards is SIGKILLed."""
    files: list[Path] = []
    yield files
    for path in files:
        with contextlib.suppress(FileNotFoundError, ValueError):
            for pid in (int(word) for word in path.read_text().split()):
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def executable(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_daemon(tmp_path: Path, notify: str, *, extra: str = "", dry_run: bool = False) -> Daemon:
    config = parse_text(
        f"""
metrics: {{enabled: false}}
control: {{enabled: false}}
state_file: {tmp_path}/state.json
events: {{file: {tmp_path}/events.jsonl}}
scripts: {{user: root}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    check: {{rise: 1, fall: 1}}
    checks: [{{type: tcp}}]
{notify}
    real_servers:
      - {{name: web-1, address: 192.168.1.101, port: 8080}}
      - {{name: web-2, address: 192.168.1.102, port: 8080}}
{extra}""",
        "test.yaml",
    )
    return Daemon(config, FakeIpvs(), dry_run=dry_run)


def probe(d: Daemon, real_server: str, ok: bool) -> None:
    key = next(k for k, subs in d.book.probes.items() if subs[0].real_server == real_server)
    detail = f"TCP connect {key.target.endpoint()}: " + ("connected" if ok else "refused")
    d.on_result(key, ProbeResult(ok, Reason.OK if ok else Reason.REFUSED, detail, 0.001))


@pytest.fixture
async def closing() -> AsyncIterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        await d.host.close()


async def test_environment_and_event(tmp_path: Path, closing: list[Daemon]) -> None:
    out = tmp_path / "env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    script = executable(tmp_path / "notify", f"#!{sys.executable}\n{code}\nprint('noted')\n")
    d = make_daemon(tmp_path, f"    notify: {{down: [{script}, --page]}}")
    closing.append(d)
    probe(d, "web-2", ok=False)
    await until(lambda: d.host.notifier.pending == 0 and out.exists())
    assert json.loads(out.read_text()) == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HEALTHD_EVENT": "down",
        "HEALTHD_SCOPE": "real_server",
        "HEALTHD_VIRTUAL_SERVER": "web",
        "HEALTHD_VIRTUAL_SERVER_ADDRESS": "10.0.0.1",
        "HEALTHD_VIRTUAL_SERVER_PORT": "80",
        "HEALTHD_VIRTUAL_SERVER_PROTOCOL": "tcp",
        "HEALTHD_VIRTUAL_SERVER_FWMARK": "0",
        "HEALTHD_REAL_SERVER": "web-2",
        "HEALTHD_REAL_SERVER_ADDRESS": "192.168.1.102",
        "HEALTHD_REAL_SERVER_PORT": "8080",
        "HEALTHD_REASON": "tcp: TCP connect 192.168.1.102:8080: refused",
    }
    (note,) = [e for e in events(tmp_path / "events.jsonl") if e["event"] == "notify"]
    assert (note["command"], note["exit"], note["output"]) == ([script, "--page"], 0, "noted")
    assert (note["state"], note["virtual_server"], note["real_server"]) == ("down", "web", "web-2")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_runs_as_the_scripts_user(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path / "events.jsonl"))
    notifier = Notifier(events=log, user=lambda: "nobody")
    env = {"PATH": "/usr/bin:/bin"}
    notifier.submit(Notification("up", "web", "web-1", ("/usr/bin/id", "-u"), 5.0, env))
    await notifier.close(grace_s=10)
    log.close()
    (note,) = events(tmp_path / "events.jsonl")
    assert (note["exit"], note["output"]) == (0, "65534")


async def test_timeout_kills_the_process_group(
    tmp_path: Path, pid_files: list[Path], closing: list[Daemon]
) -> None:
    pids = tmp_path / "pids"
    pid_files.append(pids)
    script = executable(
        tmp_path / "hang",
        f"#!/bin/sh\nsleep 60 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}\nsleep 60\n",
    )
    d = make_daemon(tmp_path, f"    notify: {{down: [{script}], timeout: 200ms}}")
    closing.append(d)
    probe(d, "web-1", ok=False)
    await until(lambda: d.host.notifier.pending == 0)
    leader, child = (int(pid) for pid in pids.read_text().split())
    await until(lambda: not alive(leader) and not alive(child))
    (note,) = [e for e in events(tmp_path / "events.jsonl") if e["event"] == "notify"]
    assert note["exit"] is None
    assert note["output"] == "timed out after 0.2s: its process group was killed"


async def test_pool_commands_on_last_down_and_first_up(
    tmp_path: Path, closing: list[Daemon]
) -> None:
    log = tmp_path / "pool.log"
    script = executable(
        tmp_path / "pool",
        f'#!/bin/sh\necho "$HEALTHD_EVENT $HEALTHD_SCOPE $HEALTHD_REAL_SERVER|$HEALTHD_REASON"'
        f" >> {log}\n",
    )
    d = make_daemon(tmp_path, f"    notify_pool: {{up: [{script}], down: [{script}]}}")
    closing.append(d)
    steps = [("web-1", True), ("web-2", True), ("web-1", False), ("web-2", False), ("web-2", True)]
    for real_server, ok in steps:
        probe(d, real_server, ok)
        await until(lambda: d.host.notifier.pending == 0)
    assert log.read_text().splitlines() == [
        "up pool |1 of 2 real servers up",  # the pool's first verdict
        "down pool |0 of 2 real servers up",  # the last one went down
        "up pool |1 of 2 real servers up",  # one is back
    ]


async def test_a_slow_command_never_delays_probes_or_the_kernel(
    tmp_path: Path, pid_files: list[Path]
) -> None:
    """The up command blocks until released; meanwhile probes complete, the kernel gets the new
    weight, and the server even goes down again.  Its down command waits for the up command."""
    started, release, log = tmp_path / "started", tmp_path / "release", tmp_path / "log"
    pid_files.append(started)
    script = executable(
        tmp_path / "slow",
        f"#!/bin/sh\necho $$ > {started}\n"
        f"while [ ! -e {release} ]; do sleep 0.02; done\necho $HEALTHD_EVENT >> {log}\n",
    )

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    backend = await asyncio.start_server(accept, "127.0.0.1", 0)
    config = parse_text(
        f"""
metrics: {{enabled: false}}
control: {{enabled: false}}
state_file: {tmp_path}/state.json
scripts: {{user: root}}
reconcile: {{min_interval: 0s}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    check: {{interval: 50ms, timeout: 40ms, rise: 1, fall: 1}}
    checks: [{{type: tcp}}]
    notify: {{down: [{script}], up: [{script}], timeout: 60s}}
    real_servers:
      - {{name: web-1, address: 127.0.0.1, port: {backend.sockets[0].getsockname()[1]}}}
""",
        "test.yaml",
    )
    port = FakeIpvs()
    d = Daemon(config, port)
    run = asyncio.create_task(d.run())

    def weight() -> int | None:
        table = port.snapshot([VS]).get(VS)
        return next((r.spec.weight for r in table.real_servers.values()), None) if table else None

    try:
        await until(started.exists)  # the up command runs, and hangs
        await until(lambda: weight() == 1)  # the kernel was updated all the same
        backend.close()
        await backend.wait_closed()
        completed = d.scheduler.completed
        await until(lambda: d.scheduler.completed > completed + 5)  # probes keep completing
        await until(lambda: d.book.status()[("web", "web-1")].health is Health.DOWN)
        await until(lambda: weight() == 0)
        assert not log.exists()  # all that while the up command was still running
        release.touch()
        await until(lambda: log.exists() and len(log.read_text().split()) == 2)
        assert log.read_text().split() == ["up", "down"]  # in the order of the changes
    finally:
        d.stopping.set()
        async with asyncio.timeout(10):
            await run


async def test_dry_run_does_not_run_commands(tmp_path: Path, closing: list[Daemon]) -> None:
    marker = tmp_path / "ran"
    script = executable(tmp_path / "notify", f"#!/bin/sh\ntouch {marker}\n")
    d = make_daemon(tmp_path, f"    notify: {{down: [{script}]}}", dry_run=True)
    closing.append(d)
    probe(d, "web-1", ok=False)
    await until(lambda: d.host.notifier.pending == 0)
    assert not marker.exists()
    (note,) = [e for e in events(tmp_path / "events.jsonl") if e["event"] == "notify"]
    assert (note["exit"], note["output"], note["dry_run"]) == (None, "dry-run: not run", True)


async def test_concurrency_is_bounded(tmp_path: Path, pid_files: list[Path]) -> None:
    """With one slot, a second command (another server) starts only after the first ends."""
    first, release, second = tmp_path / "first", tmp_path / "release", tmp_path / "second"
    pid_files.append(first)
    hold = executable(
        tmp_path / "hold",
        f"#!/bin/sh\necho $$ > {first}\nwhile [ ! -e {release} ]; do sleep 0.02; done\n",
    )
    notifier = Notifier(events=EventLog(None), max_concurrent=1)
    env = {"PATH": "/usr/bin:/bin"}
    notifier.submit(Notification("down", "web", "web-1", (hold,), 30.0, env))
    notifier.submit(Notification("down", "web", "web-2", ("/usr/bin/touch", str(second)), 30, env))
    await until(first.exists)
    await asyncio.sleep(0.2)  # room for a wrongly started second command to show itself
    assert not second.exists()
    release.touch()
    await notifier.close(grace_s=10)
    assert second.exists()


def test_pool_environment_has_no_real_server() -> None:
    config = parse_text(
        "virtual_servers: [{name: web, fwmark: 7, checks: [],"
        " real_servers: [{name: a, address: 192.168.1.1, port: 80}]}]",
        "test.yaml",
    )
    env = notify_env("down", config.virtual_servers[0], None, "0 of 1 real servers up")
    assert env["HEALTHD_SCOPE"] == "pool"
    assert env["HEALTHD_REAL_SERVER"] == env["HEALTHD_REAL_SERVER_ADDRESS"] == ""
    assert env["HEALTHD_VIRTUAL_SERVER_FWMARK"] == "7"
    assert env["HEALTHD_VIRTUAL_SERVER_ADDRESS"] == ""


def test_the_pool_is_up_as_soon_as_one_member_is_up_without_reading_the_rest() -> None:
    """A real server's change in a pool of thousands reads the pool only up to a member that is
    up (the others are never asked for), and the pool's states are what they were."""

    def members(first: list[Health]) -> Iterator[Health]:
        yield from first
        raise AssertionError("read past the first member up")

    assert pool_health(members([Health.DOWN, Health.UP])) is Health.UP
    assert pool_health([Health.DOWN, Health.DOWN]) is Health.DOWN
    assert pool_health([Health.DOWN, Health.UNKNOWN]) is Health.UNKNOWN
    assert pool_health([]) is Health.UNKNOWN
