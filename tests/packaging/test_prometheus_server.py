"""A real Prometheus server scrapes a running healthd and evaluates the shipped rules.

Prometheus (Debian's package, our own process: loopback port, temporary data dir, 1 s scrape and
evaluation interval) scrapes ``healthd run --dry-run`` probing two loopback backends.  When one
backend stops, PromQL through Prometheus's HTTP API sees it go down, its failures counted with
their reason, its weight wanted at 0, the pool count drop, and the shipped alert go pending.
Every dashboard query is also run through the same API.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from promhelpers import (
    ROOT,
    Backend,
    Healthd,
    dashboard_queries,
    free_port,
    substitute,
    tool,
    wait_for,
)

WAIT_S = 30


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now (fails on a PromQL error)."""
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expr: str, by: str) -> dict[str, float]:
        return {s["metric"].get(by, ""): float(s["value"][1]) for s in self.query(expr)}

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


@pytest.fixture
def prometheus(tmp_path: Path, healthd: Healthd) -> Iterator[Prometheus]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(ROOT / "packaging" / "prometheus" / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "healthd",
                        "static_configs": [{"targets": [f"127.0.0.1:{healthd.metrics_port}"]}],
                    }
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Prometheus(port)
    try:
        wait_for(lambda: process.poll() is None and server.ready(), WAIT_S, "prometheus ready")
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.returncode not in (0, -signal.SIGTERM):
            print(log.read_text())


def test_prometheus_sees_a_real_server_go_down(
    prometheus: Prometheus, healthd: Healthd, backends: list[Backend]
) -> None:
    up = 'healthd_real_server_state{job="healthd",state="up"} == 1'
    wait_for(lambda: set(prometheus.values(up, "real_server")) == {"rs1", "rs2"}, WAIT_S, "both up")
    assert prometheus.values('up{job="healthd"}', "job") == {"healthd": 1}

    backends[1].stop()  # rs2's port now refuses connections
    down = 'healthd_real_server_state{job="healthd",state="down"} == 1'
    wait_for(lambda: set(prometheus.values(down, "real_server")) == {"rs2"}, WAIT_S, "rs2 down")

    pool = prometheus.values('healthd_virtual_server_real_servers{virtual_server="web"}', "state")
    assert (pool["up"], pool["down"]) == (1, 1)
    refused = prometheus.values(
        'sum by (real_server) (increase(healthd_check_failures_total{reason="refused"}[1m]))',
        "real_server",
    )
    assert refused["rs2"] > 0 and refused["rs1"] == 0
    by_check = prometheus.values(
        'healthd_check_consecutive_failures{real_server="rs2"} > 0', "check"
    )
    assert set(by_check) == {"http", "port"}  # both checks of rs2 fail, each is counted
    wanted = prometheus.values(
        'healthd_real_server_desired_weight{virtual_server="web"}', "real_server"
    )
    assert wanted == {"rs1": 1, "rs2": 0}  # inhibit: weight 0, connections drain
    moves = 'healthd_real_server_transitions_total{real_server="rs2",to_state="down"}'
    assert prometheus.values(moves, "real_server") == {"rs2": 1}

    # The shipped rule matches what the daemon exposes: pending now, firing after its 5m.
    alert = 'ALERTS{alertname="HealthdRealServerDown"}'
    wait_for(lambda: bool(prometheus.query(alert)), WAIT_S, "HealthdRealServerDown pending")
    (sample,) = prometheus.query(alert)
    assert sample["metric"]["real_server"] == "rs2"
    assert sample["metric"]["alertstate"] == "pending"
    assert not prometheus.query('ALERTS{alertname="HealthdKernelOutOfSync"}')

    # Every dashboard query runs against the live data without an error.
    for _, expr in dashboard_queries():
        real = substitute(expr).replace('instance=~"healthd"', 'instance=~".*"')
        real = real.replace('virtual_server=~"healthd"', 'virtual_server=~".*"')
        prometheus.query(real)  # asserts status "success"
    states = prometheus.values(
        'sum by (state) (healthd_real_server_state{job="healthd",instance=~".*"})', "state"
    )
    assert (states["up"], states["down"]) == (1, 1)
