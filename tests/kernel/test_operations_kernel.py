"""Operating healthd on the real kernel: drain with real connections held open, overrides that
survive a restart, and a reload that changes only the difference."""

from __future__ import annotations

import socket
import struct
import tempfile
import time
from pathlib import Path

import pytest
from healthd_runner import InProcessDaemon, seed_config, wait_until
from ipvsadm import Ipvsadm
from netns import NatTopology, http_requests, run_in_netns

from healthd.config import parse_text

pytestmark = pytest.mark.kernel

VS = "TCP 10.0.0.1:80"
RS2 = "192.168.1.102:80"


def members(ipvsadm: Ipvsadm) -> dict[str, int]:
    table = ipvsadm()
    return {a: r["weight"] for a, r in table.get(VS, {"real_servers": {}})["real_servers"].items()}


def all_up(ipvsadm: Ipvsadm) -> bool:
    return members(ipvsadm) == {f"192.168.1.10{i}:80": 1 for i in (1, 2, 3)}


def open_connections(netns: str, n: int, port: int = 80) -> list[socket.socket]:
    """n idle TCP connections from the client namespace to the VIP (rr spreads them)."""

    def connect() -> list[socket.socket]:
        socks = []
        for _ in range(n):
            s = socket.create_connection(("10.0.0.1", port), timeout=5)
            socks.append(s)
        return socks

    return run_in_netns(netns, connect)


def reset_close(socks: list[socket.socket]) -> None:
    """Close with RST (SO_LINGER 0): IPVS moves the entries to CLOSE, which expires in 10 s."""
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def rs_status(running: InProcessDaemon, name: str) -> dict[str, object]:
    assert running.daemon is not None
    status = running.call(running.daemon.status)
    assert isinstance(status, dict)
    return next(r for r in status["virtual_servers"][0]["real_servers"] if r["name"] == name)


def test_drain_completes_when_the_connections_are_gone(
    nat_topo: NatTopology, ipvsadm: Ipvsadm
) -> None:
    # Its own port: the kernel keeps the connection entries of earlier tests (TIME_WAIT, 2 min)
    # and gives them back to a real server added again to the same virtual server, which would
    # keep it "draining".  A virtual server on :8080 (NAT to the real servers' :80) is fresh.
    vs = "TCP 10.0.0.1:8080"
    config = seed_config(reconcile_interval="500ms", vip_port=8080)

    def weights() -> dict[str, int]:
        table = ipvsadm()
        return {
            a: r["weight"] for a, r in table.get(vs, {"real_servers": {}})["real_servers"].items()
        }

    with InProcessDaemon(config) as running:
        running.wait_ready()
        wait_until(
            lambda: weights() == {f"192.168.1.10{i}:80": 1 for i in (1, 2, 3)}, 15, "never all up"
        )
        socks = open_connections(nat_topo.client_ns, 6, port=8080)
        try:
            assert running.daemon is not None
            daemon = running.daemon
            message = running.call(
                lambda: daemon.override("web", "web-2", "drain", owner="test", reason="deploy")
            )
            assert message == "web/web-2: drain by test: deploy"
            wait_until(lambda: weights().get(RS2) == 0, 10, "drain did not set weight 0")
            wait_until(
                lambda: rs_status(running, "web-2")["state"] == "draining",
                10,
                "not shown as draining while connections are open",
            )
            assert rs_status(running, "web-2")["active_connections"] == 2
            # New connections avoid it.
            answers = http_requests(nat_topo.client_ns, "http://10.0.0.1:8080/", 6)
            assert set(answers) == {"rs1", "rs3"}
        finally:
            reset_close(socks)
        took = wait_until(
            lambda: rs_status(running, "web-2")["state"] == "drained",
            30,
            "never drained after the connections closed",
        )
        print(f"drained {took:.1f}s after the last connection was reset")
        assert weights().get(RS2) == 0  # drained stays out until `ready`
        running.call(lambda: daemon.override("web", "web-2", "ready", owner="test"))
        wait_until(lambda: weights().get(RS2) == 1, 10, "ready did not restore the weight")


def test_overrides_survive_a_restart_without_a_flap(
    nat_topo: NatTopology, ipvsadm: Ipvsadm
) -> None:
    state_dir = tempfile.mkdtemp(prefix="healthd-test-")
    config = seed_config(state_dir=state_dir)
    with InProcessDaemon(config) as running:
        running.wait_ready()
        wait_until(lambda: all_up(ipvsadm), 15, "never all up")
        assert running.daemon is not None
        daemon = running.daemon
        running.call(lambda: daemon.override("web", "web-1", "maint", owner="test"))
        running.call(lambda: daemon.override("web", "web-3", "weight", owner="test", weight=4))
        wait_until(
            lambda: (
                members(ipvsadm).get("192.168.1.101:80") == 0
                and members(ipvsadm).get("192.168.1.103:80") == 4
            ),
            10,
            "overrides not applied",
        )
    assert (Path(state_dir) / "state.json").exists()
    want = {"192.168.1.101:80": 0, "192.168.1.102:80": 1, "192.168.1.103:80": 4}
    seen: list[dict[str, int]] = []
    with InProcessDaemon(config) as running:
        running.wait_ready()
        end = time.monotonic() + 3
        while time.monotonic() < end:
            seen.append(members(ipvsadm))
    assert seen and all(s == want for s in seen), [s for s in seen if s != want][:3]


def test_reload_applies_only_the_difference(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    state_dir = tempfile.mkdtemp(prefix="healthd-test-")
    path = Path(state_dir) / "healthd.yaml"
    text = seed_config(state_dir=state_dir, reconcile_interval="500ms")
    path.write_text(text)
    with InProcessDaemon(parse_text(text, str(path))) as running:
        running.wait_ready()
        wait_until(lambda: all_up(ipvsadm), 15, "never all up")
        nat_topo.request(30)
        time.sleep(2.5)  # the kernel refreshes its counters every 2 s
        before = ipvsadm(stats=True)[VS]["real_servers"][RS2]["stats"]["conns"]
        assert before >= 10
        path.write_text(
            text.replace(
                "192.168.1.101, port: 80, weight: 1", "192.168.1.101, port: 80, weight: 3"
            ).replace("      - {name: web-3, address: 192.168.1.103, port: 80, weight: 1}\n", "")
        )
        assert running.daemon is not None
        daemon = running.daemon
        ok, message = running.call_async(daemon.reload)
        assert ok, message
        assert "changed web/web-1" in message and "removed web/web-3" in message
        # web-3 leaves the way on_failure (inhibit) says: weight 0 while the kernel still has
        # connection entries for it (TIME_WAIT from the requests above), deleted after.
        wait_until(
            lambda: members(ipvsadm) == {"192.168.1.101:80": 3, RS2: 1, "192.168.1.103:80": 0},
            15,
            "reload not applied",
        )
        after = ipvsadm(stats=True)[VS]["real_servers"][RS2]["stats"]["conns"]
        assert after >= before  # web-2 was not deleted and re-added: its counters carry on
