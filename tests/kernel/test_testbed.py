"""The kernel test bed itself works: topologies + ipvsadm by hand, no healthd code."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from ipvsadm import Ipvsadm
from netns import (
    HEALTH_PATH,
    NO_ANSWER,
    Backend,
    DrTopology,
    NatTopology,
    http_get,
    tcp_probe,
    udp_request,
)

pytestmark = pytest.mark.kernel

VIP = "10.0.0.1:80"


def nat_rr_rules(topo: NatTopology, vip: str = VIP, weight: int = 1) -> str:
    lines = [f"-A -t {vip} -s rr"]
    lines += [f"-a -t {vip} -r {b.addr}:{b.port} -m -w {weight}" for b in topo.backends]
    return "\n".join(lines)


def test_nat_rr_spreads_requests_evenly(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    ipvsadm.restore(nat_rr_rules(nat_topo))
    try:
        ipvsadm.run("-Z")
        assert nat_topo.request(12) == Counter({"rs1": 4, "rs2": 4, "rs3": 4})

        table = ipvsadm()
        svc = table[f"TCP {VIP}"]
        assert svc["scheduler"] == "rr"
        assert set(svc["real_servers"]) == {
            "192.168.1.101:80",
            "192.168.1.102:80",
            "192.168.1.103:80",
        }
        assert all(
            rs["forward"] == "Masq" and rs["weight"] == 1 for rs in svc["real_servers"].values()
        )

        # The exported counters are refreshed by the kernel's 2 s estimator timer.
        deadline = time.monotonic() + 5
        while (stats := ipvsadm(stats=True)[f"TCP {VIP}"]["stats"])["conns"] < 12:
            assert time.monotonic() < deadline, f"stats never reached 12 conns: {stats}"
            time.sleep(0.25)
        assert stats["conns"] == 12
        assert stats["inpkts"] > 0 and stats["outpkts"] > 0  # NAT sees both directions
    finally:
        ipvsadm.run("-D", "-t", VIP)


def test_weight_zero_gets_no_new_requests(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    ipvsadm.restore(nat_rr_rules(nat_topo))
    try:
        ipvsadm.run("-e", "-t", VIP, "-r", "192.168.1.101:80", "-m", "-w", "0")
        assert ipvsadm()[f"TCP {VIP}"]["real_servers"]["192.168.1.101:80"]["weight"] == 0
        assert nat_topo.request(12) == Counter({"rs2": 6, "rs3": 6})
    finally:
        ipvsadm.run("-D", "-t", VIP)


def test_killed_backend_refuses_connections(nat_topo: NatTopology) -> None:
    rs1 = nat_topo.backend("rs1")
    assert tcp_probe(rs1.addr, 80) == "open"
    rs1.kill()
    assert rs1.pid is None
    assert tcp_probe(rs1.addr, 80) == "refused"
    rs1.restart()
    assert tcp_probe(rs1.addr, 80) == "open"
    assert http_get(rs1.addr, 80, "/") == (200, "rs1")


def test_blackholed_backend_times_out(nat_topo: NatTopology) -> None:
    rs2 = nat_topo.backend("rs2")
    rs2.blackhole()
    start = time.monotonic()
    assert tcp_probe(rs2.addr, 80, timeout=1.0) == "timeout"
    assert time.monotonic() - start >= 0.9
    rs2.unblackhole()
    assert tcp_probe(rs2.addr, 80) == "open"


def test_503_mode_makes_healthz_fail(nat_topo: NatTopology) -> None:
    rs3 = nat_topo.backend("rs3")
    assert http_get(rs3.addr, 80, HEALTH_PATH)[0] == 200
    rs3.set_health(503)
    assert http_get(rs3.addr, 80, HEALTH_PATH) == (503, "unhealthy")
    assert http_get(rs3.addr, 80, "/") == (200, "rs3")  # still serves traffic
    assert http_get(rs3.addr6 or "", 80, HEALTH_PATH)[0] == 503  # both families
    rs3.set_health(200)
    assert http_get(rs3.addr, 80, HEALTH_PATH)[0] == 200


def test_reset_restores_backends(nat_topo: NatTopology) -> None:
    rs1, rs2, rs3 = nat_topo.backends
    rs1.kill()
    rs2.blackhole()
    rs3.set_health(503)
    nat_topo.reset()
    for b in nat_topo.backends:
        assert http_get(b.addr, 80, HEALTH_PATH)[0] == 200


def test_dead_backend_behind_vip(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    """Without a health checker, IPVS keeps sending to a dead backend: requests fail."""
    ipvsadm.restore(nat_rr_rules(nat_topo))
    try:
        nat_topo.backend("rs1").kill()
        got = nat_topo.request(6, timeout=1.0)
        assert got == Counter({"rs2": 2, "rs3": 2, NO_ANSWER: 2})
    finally:
        ipvsadm.run("-D", "-t", VIP)


def test_ipv6_nat(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    vip6 = f"[{nat_topo.vip6}]:80"
    rules = [f"-A -t {vip6} -s rr"]
    rules += [f"-a -t {vip6} -r [{b.addr6}]:80 -m" for b in nat_topo.backends]
    ipvsadm.restore("\n".join(rules))
    try:
        svc = ipvsadm()["TCP [fd00:0:0:1::1]:80"]
        assert set(svc["real_servers"]) == {
            "[fd00:0:0:2::101]:80",
            "[fd00:0:0:2::102]:80",
            "[fd00:0:0:2::103]:80",
        }
        assert nat_topo.request(6, vip=nat_topo.vip6) == Counter({"rs1": 2, "rs2": 2, "rs3": 2})
    finally:
        ipvsadm.run("-D", "-t", vip6)


def test_udp_echo_through_vip(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    rs1 = nat_topo.backend("rs1")
    rs1.start_udp_echo(5353)
    assert udp_request(rs1.addr, 5353, b"direct") == b"direct"
    ipvsadm.restore(f"-A -u 10.0.0.1:53 -s rr\n-a -u 10.0.0.1:53 -r {rs1.addr}:5353 -m")
    try:
        assert udp_request("10.0.0.1", 53, b"via-vip", netns=nat_topo.client_ns) == b"via-vip"
        assert "UDP 10.0.0.1:53" in ipvsadm()
    finally:
        ipvsadm.run("-D", "-u", "10.0.0.1:53")
    rs1.stop_udp_echo()
    assert udp_request(rs1.addr, 5353, b"gone", timeout=0.5) is None


def test_dr_rr_spreads_requests(dr_topo: DrTopology, ipvsadm: Ipvsadm) -> None:
    vip = f"{dr_topo.vip}:80"
    rules = [f"-A -t {vip} -s rr"]
    rules += [f"-a -t {vip} -r {b.addr}:80 -g -w 1" for b in dr_topo.backends]
    ipvsadm.restore("\n".join(rules))
    try:
        svc = ipvsadm()[f"TCP {vip}"]
        assert {rs["forward"] for rs in svc["real_servers"].values()} == {"Route"}
        assert dr_topo.request(12) == Counter({"drs1": 6, "drs2": 6})
    finally:
        ipvsadm.run("-D", "-t", vip)


def test_backend_bound_to_one_address(nat_topo: NatTopology) -> None:
    rs1 = nat_topo.backend("rs1")
    extra = Backend(name="rs1-8081", netns=rs1.netns, addr=rs1.addr, port=8081, bind=rs1.addr)
    try:
        extra.start()
        assert http_get(rs1.addr, 8081, "/") == (200, "rs1-8081")
        assert tcp_probe(rs1.addr6 or "", 8081) == "refused"  # IPv4 address only
    finally:
        extra.close()
