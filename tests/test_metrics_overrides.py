"""Overrides in /metrics: who took a real server over, why, and until when."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from healthd.metrics.overrides import OverrideCollector
from healthd.overrides import Override, OverrideKind, RealServerId


def test_override_series_follow_the_overrides() -> None:
    current: dict[RealServerId, Override] = {
        ("web", "a"): Override(OverrideKind.DRAIN, "alice", "kernel upgrade", 1.0, 500.0),
        ("web", "b"): Override(OverrideKind.WEIGHT, "bob", "", 1.0, None, 7),
    }
    registry = CollectorRegistry()
    registry.register(OverrideCollector(lambda: current))
    info = "healthd_real_server_override_info"
    assert (
        registry.get_sample_value(
            info,
            {
                "virtual_server": "web",
                "real_server": "a",
                "kind": "drain",
                "weight": "",
                "owner": "alice",
                "reason": "kernel upgrade",
            },
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            info,
            {
                "virtual_server": "web",
                "real_server": "b",
                "kind": "weight",
                "weight": "7",
                "owner": "bob",
                "reason": "",
            },
        )
        == 1
    )
    expiry = "healthd_real_server_override_expiry_timestamp_seconds"
    assert registry.get_sample_value(expiry, {"virtual_server": "web", "real_server": "a"}) == 500
    assert registry.get_sample_value(expiry, {"virtual_server": "web", "real_server": "b"}) is None
    current.clear()  # `healthd ready`: the series go away
    assert (
        registry.get_sample_value(
            info,
            {
                "virtual_server": "web",
                "real_server": "b",
                "kind": "weight",
                "weight": "7",
                "owner": "bob",
                "reason": "",
            },
        )
        is None
    )
