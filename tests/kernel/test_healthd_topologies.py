"""healthd on the other shapes of virtual server: DR, IPv6, UDP and fwmark, with real traffic."""

from __future__ import annotations

import subprocess

import pytest
from healthd_runner import InProcessDaemon, wait_until
from ipvsadm import Ipvsadm
from netns import DrTopology, NatTopology, udp_request

pytestmark = pytest.mark.kernel

TIMING = "defaults: {check: {interval: 500ms, timeout: 300ms, rise: 2, fall: 2}}\n"
HEAD = "metrics: {enabled: false}\nreconcile: {interval: 1s}\n" + TIMING


def members(ipvsadm: Ipvsadm, vs: str) -> dict[str, tuple[str, int]]:
    table = ipvsadm()
    if vs not in table:
        return {}
    return {a: (r["forward"], r["weight"]) for a, r in table[vs]["real_servers"].items()}


def test_direct_routing(dr_topo: DrTopology, ipvsadm: Ipvsadm) -> None:
    config = (
        HEAD
        + """
virtual_servers:
  - name: dr
    address: 10.20.0.100
    port: 80
    scheduler: rr
    forwarding: dr
    checks: [{type: http, path: /healthz}]
    real_servers:
      - {name: drs1, address: 10.20.0.11}
      - {name: drs2, address: 10.20.0.12}
"""
    )
    vs = "TCP 10.20.0.100:80"
    want = {"10.20.0.11:80": ("Route", 1), "10.20.0.12:80": ("Route", 1)}
    with InProcessDaemon(config) as running:
        running.wait_ready()
        wait_until(lambda: members(ipvsadm, vs) == want, 20, "DR table never built")
        assert dr_topo.request(8) == {"drs1": 4, "drs2": 4}
        dr_topo.backend("drs2").kill()
        wait_until(
            lambda: members(ipvsadm, vs).get("10.20.0.12:80") == ("Route", 0),
            20,
            "DR real server never inhibited",
        )
        assert set(dr_topo.request(4)) == {"drs1"}


def test_ipv6_virtual_server(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    config = (
        HEAD
        + """
virtual_servers:
  - name: web6
    address: fd00:0:0:1::1
    port: 80
    scheduler: rr
    checks: [{type: http, path: /healthz}]
    real_servers:
      - {name: rs1, address: "fd00:0:0:2::101"}
      - {name: rs2, address: "fd00:0:0:2::102"}
      - {name: rs3, address: "fd00:0:0:2::103"}
"""
    )
    vs = "TCP [fd00:0:0:1::1]:80"
    want = {f"[fd00:0:0:2::10{i}]:80": ("Masq", 1) for i in (1, 2, 3)}
    with InProcessDaemon(config) as running:
        running.wait_ready()
        wait_until(lambda: members(ipvsadm, vs) == want, 20, "IPv6 table never built")
        assert nat_topo.request(6, vip="fd00:0:0:1::1") == {"rs1": 2, "rs2": 2, "rs3": 2}
        nat_topo.backend("rs1").kill()
        wait_until(
            lambda: members(ipvsadm, vs).get("[fd00:0:0:2::101]:80") == ("Masq", 0),
            20,
            "IPv6 real server never inhibited",
        )
        assert set(nat_topo.request(4, vip="fd00:0:0:1::1")) == {"rs2", "rs3"}


def test_udp_virtual_server_checked_over_tcp(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    for backend in nat_topo.backends:
        backend.start_udp_echo(5353)
    config = (
        HEAD
        + """
virtual_servers:
  - name: dns
    address: 10.0.0.1
    port: 5353
    protocol: udp
    scheduler: rr
    checks: [{type: tcp, port: 80}]
    real_servers:
      - {name: rs1, address: 192.168.1.101}
      - {name: rs2, address: 192.168.1.102}
"""
    )
    vs = "UDP 10.0.0.1:5353"
    want = {"192.168.1.101:5353": ("Masq", 1), "192.168.1.102:5353": ("Masq", 1)}
    with InProcessDaemon(config) as running:
        running.wait_ready()
        wait_until(lambda: members(ipvsadm, vs) == want, 20, "UDP table never built")
        reply = udp_request("10.0.0.1", 5353, b"ping", timeout=2.0, netns=nat_topo.client_ns)
        assert reply is not None and reply.endswith(b"ping")


def test_fwmark_virtual_server(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    rules = (
        "table ip hd_fwmark {\n"
        "  chain pre {\n"
        "    type filter hook prerouting priority mangle;\n"
        "    ip daddr 10.0.0.1 tcp dport 8080 meta mark set 7\n"
        "  }\n"
        "}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    config = (
        HEAD
        + """
virtual_servers:
  - name: marked
    fwmark: 7
    scheduler: rr
    checks: [{type: http, path: /healthz}]
    real_servers:
      - {name: rs1, address: 192.168.1.101, port: 80}
      - {name: rs2, address: 192.168.1.102, port: 80}
"""
    )
    vs = "FWM 7"
    want = {"192.168.1.101:80": ("Masq", 1), "192.168.1.102:80": ("Masq", 1)}
    try:
        with InProcessDaemon(config) as running:
            running.wait_ready()
            wait_until(lambda: members(ipvsadm, vs) == want, 20, "fwmark table never built")
            url_answers = _requests(nat_topo, "http://10.0.0.1:8080/", 4)
            assert url_answers == {"rs1": 2, "rs2": 2}
    finally:
        subprocess.run(["nft", "delete", "table", "ip", "hd_fwmark"], check=False)


def _requests(topo: NatTopology, url: str, n: int) -> dict[str, int]:
    from netns import http_requests

    return dict(http_requests(topo.client_ns, url, n))
