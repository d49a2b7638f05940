"""Prometheus metrics on healthd's own registry (see docs/metrics.md for every family).

``records`` (pure book-keeping), ``collectors`` and ``kernel`` (render snapshots at scrape time,
never netlink), ``instrumented`` (timing kernel requests, event-loop lag), ``recorder`` (the
``Metrics`` object the daemon feeds).
"""

from healthd.metrics.collectors import Sources
from healthd.metrics.instrumented import NETLINK_OPERATIONS, TimedPort
from healthd.metrics.recorder import Metrics

__all__ = ["NETLINK_OPERATIONS", "Metrics", "Sources", "TimedPort"]
