"""Kernel IPVS statistics by config name, from the reconciler's latest kernel snapshot.

The reconciler dumps the kernel's table on every pass (at least every ``reconcile.interval``) and
keeps it; this collector renders that snapshot, so a scrape never sends a netlink request.  The
counters are the kernel's 64-bit ones; its rate estimates are left out (use ``rate()``).  A
virtual or real server that is not in the kernel has no series here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from healthd.config.types import Config
from healthd.model import Observed, TrafficStats

REAL_SERVER = ["virtual_server", "real_server"]
VIRTUAL_SERVER = ["virtual_server"]

# (suffix, attribute of TrafficStats, help)
COUNTERS = (
    ("connections", "connections", "Connections scheduled"),
    ("incoming_packets", "packets_in", "Packets from clients"),
    ("outgoing_packets", "packets_out", "Packets to clients (0 with dr and tunnel forwarding)"),
    ("incoming_bytes", "bytes_in", "Bytes from clients"),
    ("outgoing_bytes", "bytes_out", "Bytes to clients (0 with dr and tunnel forwarding)"),
)
GAUGES = (
    ("active", "active_connections", "Connections established (TCP ESTABLISHED)"),
    ("inactive", "inactive_connections", "Connections in any other state"),
    ("persistent", "persistent_connections", "Persistence templates pointing here"),
)


class KernelCollector:
    def __init__(self, config: Callable[[], Config], observed: Callable[[], Observed]) -> None:
        self._config = config
        self._observed = observed

    def _families(
        self,
    ) -> tuple[list[CounterMetricFamily], list[CounterMetricFamily], list[GaugeMetricFamily]]:
        vs = [
            CounterMetricFamily(
                f"healthd_ipvs_virtual_server_{name}",
                f"{text}, for the virtual server (kernel IPVS counter)",
                labels=VIRTUAL_SERVER,
            )
            for name, _, text in COUNTERS
        ]
        rs = [
            CounterMetricFamily(
                f"healthd_ipvs_real_server_{name}",
                f"{text}, for the real server (kernel IPVS counter)",
                labels=REAL_SERVER,
            )
            for name, _, text in COUNTERS
        ]
        conns = [
            GaugeMetricFamily(
                f"healthd_ipvs_real_server_connections_{name}",
                f"{text}, in the kernel's connection table",
                labels=REAL_SERVER,
            )
            for name, _, text in GAUGES
        ]
        return vs, rs, conns

    def describe(self) -> Iterable[Metric]:
        vs, rs, conns = self._families()
        return [*vs, *rs, *conns]

    def collect(self) -> Iterable[Metric]:
        vs_families, rs_families, conn_families = self._families()
        observed = self._observed()
        for vs in self._config().virtual_servers:
            have_vs = observed.get(vs.key)
            if have_vs is None:
                continue
            _add_stats(vs_families, [vs.name], have_vs.stats)
            for rs in vs.real_servers:
                have = have_vs.real_servers.get(rs.key)
                if have is None:
                    continue
                names = [vs.name, rs.name]
                _add_stats(rs_families, names, have.stats)
                for family, (_, attribute, _) in zip(conn_families, GAUGES, strict=True):
                    family.add_metric(names, getattr(have, attribute))
        return [*vs_families, *rs_families, *conn_families]


def _add_stats(families: list[CounterMetricFamily], names: list[str], stats: TrafficStats) -> None:
    for family, (_, attribute, _) in zip(families, COUNTERS, strict=True):
        family.add_metric(names, getattr(stats, attribute))
