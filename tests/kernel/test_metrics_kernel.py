"""On the real kernel: /metrics shows IPVS's own counters, by config name, moving with traffic.

Client requests cross the VIP from the client namespace; the kernel counts them (it refreshes
its exported counters every 2 s) and healthd renders its latest dump of the table, so the waits
poll /metrics.  The witness is ``ipvsadm -Ln --stats --exact`` read at the same time.
"""

from __future__ import annotations

import socket
import urllib.request

import pytest
from healthd_runner import InProcessDaemon, seed_config, wait_until
from ipvsadm import Ipvsadm
from netns import NatTopology
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.kernel

VS = "TCP 10.0.0.1:80"
NAMES = {"web-1": "rs1", "web-2": "rs2", "web-3": "rs3"}  # config name -> backend
ADDRESSES = {"web-1": "192.168.1.101:80", "web-2": "192.168.1.102:80", "web-3": "192.168.1.103:80"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> dict[tuple[str, str], float]:
    """healthd_ipvs_* samples keyed by (name, real server or "")."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("healthd_ipvs_"):
                out[(sample.name, sample.labels.get("real_server", ""))] = sample.value
    return out


def test_kernel_counters_move_with_client_traffic(nat_topo: NatTopology, ipvsadm: Ipvsadm) -> None:
    port = free_port()
    config = seed_config(metrics=f'listen: "127.0.0.1:{port}"', reconcile_interval="1s")
    with InProcessDaemon(config) as running:
        running.wait_ready()
        wait_until(
            lambda: (
                {a: r["weight"] for a, r in ipvsadm().get(VS, {}).get("real_servers", {}).items()}
                == dict.fromkeys(ADDRESSES.values(), 1)
            ),
            20,
            "the seed table never reached weight 1",
        )
        before = scrape(port)
        assert before[("healthd_ipvs_virtual_server_connections_total", "")] == 0
        answers = nat_topo.request(12)
        assert answers == {"rs1": 4, "rs2": 4, "rs3": 4}

        conns = "healthd_ipvs_real_server_connections_total"

        def counted() -> bool:
            now = scrape(port)
            total = now[("healthd_ipvs_virtual_server_connections_total", "")]
            per_rs = sum(now[(conns, name)] - before[(conns, name)] for name in NAMES)
            return total >= 12 and per_rs >= 12

        wait_until(counted, 20, "the kernel's connection counters never moved in /metrics")
        after = scrape(port)
        stats = ipvsadm(stats=True)[VS]
        for name, backend in NAMES.items():
            # The kernel counted every connection each real server answered, under its name.
            assert after[(conns, name)] - before[(conns, name)] == answers[backend]
            assert after[(conns, name)] == stats["real_servers"][ADDRESSES[name]]["stats"]["conns"]
        assert after[("healthd_ipvs_virtual_server_connections_total", "")] == 12
        for direction in ("incoming", "outgoing"):  # NAT: replies cross the director too
            for unit in ("packets", "bytes"):
                name = f"healthd_ipvs_virtual_server_{direction}_{unit}_total"
                assert after[(name, "")] > before[(name, "")], name
        assert after[("healthd_ipvs_virtual_server_incoming_packets_total", "")] >= 12 * 3

        # Closed connections linger in the kernel's table (TIME_WAIT) as inactive ones.
        inactive = "healthd_ipvs_real_server_connections_inactive"
        wait_until(
            lambda: sum(v for (n, _), v in scrape(port).items() if n == inactive) >= 1,
            10,
            "no inactive connection ever shown",
        )
