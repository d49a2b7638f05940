"""The ``healthd`` command as a user runs it: check-config, and run --dry-run on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
HEALTHD = [sys.executable, "-m", "healthd"]


def healthd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEALTHD, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_shipped_example_config_is_valid() -> None:
    done = healthd("check-config", "etc/healthd.yaml")
    assert done.returncode == 0, done.stderr
    assert "1 virtual servers, 3 real servers" in done.stdout


def test_check_config_prints_every_error_as_file_line_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "virtual_servers:\n"
        "  - name: web\n"
        "    address: 10.0.0.1\n"
        "    port: 80\n"
        "    scheduler: fastest\n"
        "    checks: [{type: tcp, timeout: 5s}]\n"
        "    real_servers:\n"
        "      - {name: a, address: 192.168.1.300, port: 80}\n"
    )
    done = healthd("check-config", str(bad))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"{bad}:5: virtual_servers[web].scheduler: unknown scheduler 'fastest' (expected one of: "
        "dh, fo, lblc, lblcr, lc, mh, nq, ovf, rr, sed, sh, twos, wlc, wrr)",
        f"{bad}:6: virtual_servers[web].checks[0].timeout: timeout (5s) must be shorter than "
        "interval (2s)",
        f"{bad}:8: virtual_servers[web].real_servers[a].address: invalid IP address "
        "'192.168.1.300'",
    ]


def test_run_refuses_an_invalid_config_the_same_way(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("virtual_servers: []\nbogus: 1\n")
    done = healthd("run", "-c", str(bad), "--dry-run")
    assert done.returncode == 1
    assert f"{bad}:2: bogus: unknown key" in done.stderr
    assert "refusing to start" in done.stderr


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this host has IPVS")
def test_run_without_ipvs_fails_at_start_with_one_clear_sentence() -> None:
    done = healthd("run", "-c", "etc/healthd.yaml")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("healthd: IPVS is not available in this kernel")
    assert "--dry-run" in last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Backend(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[tuple[ThreadingHTTPServer, type[Backend]]]:
    handler = type("Handler", (Backend,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):  # keyed with the labels sorted
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def test_dry_run_probes_plans_logs_and_stops_cleanly(
    tmp_path: Path, backend: tuple[ThreadingHTTPServer, type[Backend]]
) -> None:
    server, handler = backend
    up_port = server.server_address[1]
    down_port = free_port()
    metrics_port = free_port()
    config = tmp_path / "healthd.yaml"
    config.write_text(
        f"""
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
control: {{socket: {tmp_path}/healthd.sock}}
state_file: {tmp_path}/state.json
defaults: {{check: {{interval: 200ms, timeout: 100ms, rise: 2, fall: 2}}}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    scheduler: rr
    checks: [{{type: http, path: /healthz}}]
    real_servers:
      - {{name: good, address: 127.0.0.1, port: {up_port}}}
      - {{name: dead, address: 127.0.0.1, port: {down_port}}}
"""
    )
    proc = subprocess.Popen(
        [*HEALTHD, "run", "-c", str(config), "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        good = 'healthd_real_server_state{real_server="good",state="up",virtual_server="web"}'
        dead = 'healthd_real_server_state{real_server="dead",state="down",virtual_server="web"}'
        # the desired weight is the latest reconcile pass's: it follows the verdict a pass later
        weight = 'healthd_real_server_desired_weight{real_server="good",virtual_server="web"}'
        deadline = time.monotonic() + 15
        values: dict[str, float] = {}
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                values = scrape(metrics_port)
            except OSError:
                continue
            if values.get(good) == 1 and values.get(dead) == 1 and values.get(weight) == 1:
                break
        assert values.get(good) == 1 and values.get(dead) == 1, values
        assert values[weight] == 1
        attempts = (
            'healthd_check_attempts_total{check="http",real_server="dead",virtual_server="web"}'
        )
        assert values[attempts] >= 1
        # The good backend starts failing: after fall=2 failures it goes down (weight 0).
        handler.status = 503
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and values.get(weight) != 0:
            time.sleep(0.2)
            values = scrape(metrics_port)
        assert values.get(weight) == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "dry-run: would add virtual server TCP 10.0.0.1:80 scheduler rr" in err
    assert "dry-run: would edit real server TCP 10.0.0.1:80 -> 127.0.0.1:" in err
    assert "real server web/good: up -> down because http: HTTP GET" in err
    assert "status 503" in err
    assert "stopped" in err.splitlines()[-1]
