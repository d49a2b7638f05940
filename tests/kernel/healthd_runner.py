"""Run healthd against the real kernel from a kernel test.

``InProcessDaemon`` runs the daemon (``healthd.daemon.Daemon`` on the real netlink adapter) on
its own event loop in a thread: no Python start-up per test (2 s+ under TCG).  Tests that need a
real process (SIGKILL, the CLI) use ``spawn_healthd``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from healthd.config import Config, parse_text
from healthd.daemon import Daemon, open_port

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def seed_config(
    *,
    interval: str = "500ms",
    timeout: str = "300ms",
    rise: int = 2,
    fall: int = 2,
    on_failure: str = "inhibit",
    check: str = "{type: http, path: /healthz}",
    reconcile_interval: str = "1s",
    extra: str = "",
    metrics: str = "enabled: false",
    state_dir: str | None = None,
    vip_port: int = 80,
) -> str:
    """The seed topology (etc/healthd.yaml) with test timings, and its own state and socket."""
    state_dir = state_dir or tempfile.mkdtemp(prefix="healthd-test-")
    return f"""
metrics: {{{metrics}}}
control: {{socket: {state_dir}/healthd.sock}}
state_file: {state_dir}/state.json
reconcile: {{interval: {reconcile_interval}}}
defaults:
  check: {{interval: {interval}, timeout: {timeout}, rise: {rise}, fall: {fall}}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: {vip_port}
    protocol: tcp
    scheduler: rr
    forwarding: nat
    on_failure: {on_failure}
    checks: [{check}]
    real_servers:
      - {{name: web-1, address: 192.168.1.101, port: 80, weight: 1}}
      - {{name: web-2, address: 192.168.1.102, port: 80, weight: 1}}
      - {{name: web-3, address: 192.168.1.103, port: 80, weight: 1}}
{extra}"""


class InProcessDaemon:
    def __init__(self, config: Config | str, *, dry_run: bool = False) -> None:
        self.config = config if isinstance(config, Config) else parse_text(config, "test.yaml")
        self.dry_run = dry_run
        self.daemon: Daemon | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="healthd", daemon=True)
        self._started = threading.Event()
        self.error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._started.set()
        finally:
            self._loop.close()

    async def _run(self) -> None:
        port = await open_port(self.config, self.dry_run)
        self.daemon = Daemon(self.config, port, dry_run=self.dry_run)
        self._started.set()
        await self.daemon.run()

    def start(self) -> InProcessDaemon:
        self._thread.start()
        self._started.wait(60)
        if self.error is not None:
            raise self.error
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.daemon is not None
        wait_until(self.daemon.reconciler.ready.is_set, timeout, "healthd never got ready")

    def call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the daemon's loop and return its result."""

        async def wrapper() -> object:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    def call_async(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` on the daemon's loop and return its result."""

        async def wrapper() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(30)

    def stop(self) -> None:
        if self.daemon is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.daemon.stopping.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "healthd did not stop within 30 s"
        if self.error is not None:
            raise self.error

    def __enter__(self) -> InProcessDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(
    predicate: Callable[[], bool], timeout: float, message: str, period: float = 0.05
) -> float:
    """Poll until ``predicate()``; returns the seconds it took, or fails with ``message``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{message} (waited {timeout:g}s)")
        time.sleep(period)


def spawn_healthd(config_path: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m healthd run -c CONFIG ARGS`` with output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "healthd", "run", "-c", str(config_path), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
