"""Operator overrides as metrics: which real servers an operator has taken over, by whom, why,
and until when.  Series exist only while an override does (one per overridden real server)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric

from healthd.overrides import Override, RealServerId


class OverrideCollector:
    def __init__(self, overrides: Callable[[], Mapping[RealServerId, Override]]) -> None:
        self._overrides = overrides

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "healthd_real_server_override_info",
            "An operator override of a real server (healthd drain/maint/weight): 1 while it holds",
            labels=["virtual_server", "real_server", "kind", "weight", "owner", "reason"],
        )
        expiry = GaugeMetricFamily(
            "healthd_real_server_override_expiry_timestamp_seconds",
            "When an operator override with a TTL expires (Unix time)",
            labels=["virtual_server", "real_server"],
        )
        return info, expiry

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        info, expiry = self._families()
        for (vs, rs), o in sorted(self._overrides().items()):
            weight = "" if o.weight is None else str(o.weight)
            info.add_metric([vs, rs, o.kind.value, weight, o.owner, o.reason], 1)
            if o.expires_at is not None:
                expiry.add_metric([vs, rs], o.expires_at)
        return (info, expiry)
