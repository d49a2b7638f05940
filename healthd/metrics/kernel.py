"""Kernel IPVS statistics by config name, from the reconciler's latest kernel snapshot.

The reconciler dumps the kernel's table on every pass (at least every ``reconcile.interval``) and
keeps it; this collector renders that snapshot, so a scrape never sends a netlink request.  The
counters are the kernel's 64-bit ones; its rate estimates are left out (use ``rate()``).  A
virtual or real server that is not in the kernel has no series here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from operator import attrgetter

from healthd.config.types import Config
from healthd.metrics.layout import Layouts
from healthd.metrics.text import Family, present
from healthd.model import Observed, ObservedRealServer, TrafficStats

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
    def __init__(
        self,
        config: Callable[[], Config],
        observed: Callable[[], Observed],
        layouts: Layouts | None = None,
    ) -> None:
        self._config = config
        self._observed = observed
        self._families = _families()
        self._layouts = Layouts() if layouts is None else layouts

    def pieces(self) -> Iterator[bytes]:
        """The families' text, a piece at a time (``text.py``)."""
        vs_families, rs_families, conn_families = self._families
        config, observed = self._config(), self._observed()
        lay = self._layouts.servers(config)
        for family in (*vs_families, *rs_families, *conn_families):
            family.start()
        # the virtual and real servers of the config that are in the kernel, in config order
        vss = list(map(observed.get, lay.vs_keys))
        rss: list[ObservedRealServer | None] = []
        for have_vs, (start, end) in zip(vss, lay.spans, strict=True):
            keys = lay.rs_keys[start:end]
            rss += map(have_vs.real_servers.get, keys) if have_vs else repeat(None, end - start)
        vs_blocks, vs_seen = present(lay.vs_blocks, vss)
        rs_blocks, rs_seen = present(lay.rs_blocks, rss)
        yield from _add_stats(vs_families, vs_blocks, [vs.stats for vs in vs_seen])
        yield from _add_stats(rs_families, rs_blocks, [rs.stats for rs in rs_seen])
        for family, (_, attribute, _) in zip(conn_families, GAUGES, strict=True):
            yield from family.column_pieces(rs_blocks, list(map(attrgetter(attribute), rs_seen)))


def _add_stats(
    families: list[Family], blocks: Sequence[str], stats: list[TrafficStats]
) -> Iterator[bytes]:
    for family, (_, attribute, _) in zip(families, COUNTERS, strict=True):
        yield from family.column_pieces(blocks, list(map(attrgetter(attribute), stats)))


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
