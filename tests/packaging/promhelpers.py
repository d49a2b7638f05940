"""Helpers for the packaging tests: Prometheus's tools, loopback backends, running healthd.

promtool and prometheus come from Debian's ``prometheus`` package (scripts/bootstrap installs
it).  Everything listens on 127.0.0.1 with ports picked by the kernel; only processes these
helpers start are stopped, by PID.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "packaging" / "grafana" / "healthd.json"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's prometheus package (scripts/bootstrap)")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool("promtool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class Backend:
    """A loopback HTTP server answering 200; ``stop()`` makes its port refuse connections."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.server.shutdown()
            self.server.server_close()
            self.running = False


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend(), Backend()]
    yield started
    for backend in started:
        backend.stop()


@dataclass
class Healthd:
    process: subprocess.Popen[str]
    metrics_port: int
    log: Path

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
            return text


def healthd_config(tmp_path: Path, metrics_port: int, backends: list[Backend]) -> Path:
    real_servers = "".join(
        f"      - {{name: rs{i}, address: 127.0.0.1, port: {b.port}}}\n"
        for i, b in enumerate(backends, 1)
    )
    path = tmp_path / "healthd.yaml"
    path.write_text(
        f"""
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
control: {{enabled: false}}
state_file: {tmp_path}/state.json
reconcile: {{interval: 1s}}
defaults: {{check: {{interval: 200ms, timeout: 150ms, rise: 1, fall: 1}}}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    scheduler: rr
    checks:
      - {{type: http, path: /healthz}}
      - {{type: tcp, name: port}}
    real_servers:
{real_servers}"""
    )
    return path


@pytest.fixture
def healthd(tmp_path: Path, backends: list[Backend]) -> Iterator[Healthd]:
    """``healthd run --dry-run`` on loopback, probing ``backends``; stopped with SIGTERM."""
    metrics_port = free_port()
    config = healthd_config(tmp_path, metrics_port, backends)
    log = tmp_path / "healthd.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "healthd", "run", "-c", str(config), "--dry-run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            text=True,
        )
    running = Healthd(process, metrics_port, log)

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return "healthd_build_info" in running.metrics()
        except OSError:
            return False

    try:
        wait_for(answers, 30, "healthd's /metrics")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    queries: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
            walk(panel.get("panels", []))

    walk(board["panels"])
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = (
            variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        )
        match = re.fullmatch(r"label_values\((.+), *(\w+)\)", query)
        assert match, f"variable {variable['name']}: unexpected query {query!r}"
        queries.append((f"variable {variable['name']}", match.group(1)))
    return queries


def substitute(expr: str) -> str:
    """What Grafana sends: its interval variables and our template variables filled in."""
    for name, value in (("__rate_interval", "1m"), ("__interval", "15s"), ("__range", "6h")):
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return re.sub(r"\$\{?\w+\}?", "healthd", expr)
