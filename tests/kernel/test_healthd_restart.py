"""Restarting healthd over a live table: SIGKILL, start again, no weight of a healthy real server
moves (the table is polled every 20 ms straight from /proc/net/ip_vs)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from healthd_runner import seed_config, spawn_healthd, wait_until
from ipvsadm import Ipvsadm
from netns import NatTopology

pytestmark = pytest.mark.kernel


def proc_weights() -> dict[str, int]:
    """Weights of TCP 10.0.0.1:80 from /proc/net/ip_vs (hex addresses), cheap enough for 20 ms."""
    weights: dict[str, int] = {}
    in_vs = False
    for line in Path("/proc/net/ip_vs").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] in ("TCP", "UDP", "SCTP", "FWM"):
            in_vs = fields[0] == "TCP" and fields[1] == "0A000001:0050"
        elif fields[0] == "->" and in_vs:
            host, port = fields[1].split(":")
            addr = ".".join(str(int(host[i : i + 2], 16)) for i in range(0, 8, 2))
            weights[f"{addr}:{int(port, 16)}"] = int(fields[3])
    return weights


def test_sigkill_and_restart_never_moves_a_healthy_weight(
    nat_topo: NatTopology, ipvsadm: Ipvsadm, tmp_path: Path
) -> None:
    config = tmp_path / "healthd.yaml"
    config.write_text(seed_config())
    log = tmp_path / "healthd.log"
    healthy = {"192.168.1.101:80": 1, "192.168.1.102:80": 1, "192.168.1.103:80": 1}
    first = spawn_healthd(config, log=log)
    try:
        wait_until(lambda: proc_weights() == healthy, 60, "first daemon never built the table")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    log.write_text("")
    second = spawn_healthd(config, log=log)
    samples = 0
    changes: list[tuple[float, dict[str, int]]] = []
    try:
        t0 = time.monotonic()
        deadline = t0 + 120
        verdicts_at: float | None = None
        while time.monotonic() < deadline:
            current = proc_weights()
            samples += 1
            if current != healthy:
                changes.append((time.monotonic() - t0, current))
            text = log.read_text()
            if verdicts_at is None and all(
                f"real server web/web-{i}: unknown -> up" in text for i in (1, 2, 3)
            ):
                verdicts_at = time.monotonic()
            if verdicts_at is not None and time.monotonic() - verdicts_at > 2.0:
                break
            time.sleep(0.02)
        assert verdicts_at is not None, f"the restarted daemon gave no verdicts:\n{log.read_text()}"
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert changes == [], f"weights moved during the restart: {changes[:5]}"
    assert samples > 50
    assert second.returncode == 0
    assert proc_weights() == healthy
