"""Kernel IPVS statistics by config name, from the reconciler's latest kernel snapshot.

The reconciler dumps the kernel's table on every pass (at least every ``reconcile.interval``) and
keeps it; this collector renders that snapshot, so a scrape never sends a netlink request.  The
counters are the kernel's 64-bit ones; its rate estimates are left out (use ``rate()``).  A
virtual or real server that is not in the kernel has no series here.
"""

from __future__ import annotations

from collections.abc import Callable

from healthd.config.types import Config
from healthd.metrics.text import Family, LabelBlocks
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
        self._vs_labels = LabelBlocks(VIRTUAL_SERVER)
        self._rs_labels = LabelBlocks(REAL_SERVER)
        self._families = _families()

    def render(self) -> list[Family]:
        vs_families, rs_families, conn_families = self._families
        config, observed = self._config(), self._observed()
        for family in (*vs_families, *rs_families, *conn_families):
            family.start(config)
        self._vs_labels.forget_unless(config)
        self._rs_labels.forget_unless(config)
        for vs in config.virtual_servers:
            have_vs = observed.get(vs.key)
            if have_vs is None:
                continue
            _add_stats(vs_families, self._vs_labels((vs.name,)), have_vs.stats)
            for rs in vs.real_servers:
                have = have_vs.real_servers.get(rs.key)
                if have is None:
                    continue
                b = self._rs_labels((vs.name, rs.name))
                _add_stats(rs_families, b, have.stats)
                for family, (_, attribute, _) in zip(conn_families, GAUGES, strict=True):
                    family.add(b, getattr(have, attribute))
        return [*vs_families, *rs_families, *conn_families]


def _add_stats(families: list[Family], labels: str, stats: TrafficStats) -> None:
    for family, (_, attribute, _) in zip(families, COUNTERS, strict=True):
        family.add(labels, getattr(stats, attribute))


def _families() -> tuple[list[Family], list[Family], list[Family]]:
    vs_families = [
        Family(
            f"healthd_ipvs_virtual_server_{name}",
            "counter",
            f"{text}, for the virtual server (kernel IPVS counter)",
        )
        for name, _, text in COUNTERS
    ]
    rs_families = [
        Family(
            f"healthd_ipvs_real_server_{name}",
            "counter",
            f"{text}, for the real server (kernel IPVS counter)",
        )
        for name, _, text in COUNTERS
    ]
    conn_families = [
        Family(
            f"healthd_ipvs_real_server_connections_{name}",
            "gauge",
            f"{text}, in the kernel's connection table",
        )
        for name, _, text in GAUGES
    ]
    return vs_families, rs_families, conn_families
