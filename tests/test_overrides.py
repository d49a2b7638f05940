"""Operator overrides: the table in healthd/overrides.py, expiry, and their effect on the plan."""

from __future__ import annotations

import pytest

from healthd import policy
from healthd.config import parse_text
from healthd.ipvs.fake import FakeIpvs
from healthd.model import (
    Forwarding,
    Health,
    ObservedRealServer,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
)
from healthd.overrides import Override, OverrideKind, next_expiry, shown_state, unexpired
from healthd.plan import plan
from healthd.policy import RealServerStatus

CONFIG = parse_text(
    """
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    on_failure: remove
    checks: [{type: tcp}]
    real_servers:
      - {name: a, address: 192.168.1.1, weight: 5}
      - {name: b, address: 192.168.1.2, weight: 5}
""",
    "t.yaml",
)
VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)
A = RealServerKey("192.168.1.1", 80)
UP = RealServerStatus(Health.UP, "ok")
DOWN = RealServerStatus(Health.DOWN, "refused")


def observed(active: int, inactive: int) -> ObservedRealServer:
    return ObservedRealServer(RealServerSpec(A, Forwarding.NAT, 0), active, inactive)


@pytest.mark.parametrize(
    ("override", "seen", "health", "shown"),
    [
        pytest.param(None, None, Health.UP, "up", id="no-override-up"),
        pytest.param(None, None, Health.DOWN, "down", id="no-override-down"),
        pytest.param(OverrideKind.MAINT, None, Health.UP, "maintenance", id="maint"),
        pytest.param(OverrideKind.DRAIN, observed(2, 0), Health.UP, "draining", id="drain-active"),
        pytest.param(OverrideKind.DRAIN, observed(0, 3), Health.UP, "draining", id="drain-inact"),
        pytest.param(OverrideKind.DRAIN, observed(0, 0), Health.UP, "drained", id="drain-done"),
        pytest.param(OverrideKind.DRAIN, None, Health.DOWN, "drained", id="drain-absent"),
        pytest.param(OverrideKind.WEIGHT, None, Health.DOWN, "down", id="weight-shows-health"),
    ],
)
def test_shown_state(
    override: OverrideKind | None, seen: ObservedRealServer | None, health: Health, shown: str
) -> None:
    o = Override(override, "root", weight=3) if override else None
    assert shown_state(health, o, seen) == shown


def ops_for(overrides: dict[tuple[str, str], Override], status: policy.StatusMap) -> list[str]:
    fake = FakeIpvs()
    for op in plan(policy.desired(CONFIG, {("web", "a"): UP, ("web", "b"): UP}), {}):
        fake.apply_now(op)
    return [str(op) for op in plan(policy.desired(CONFIG, status, overrides), fake.snapshot())]


def test_drain_and_maint_set_weight_zero_even_in_remove_mode_and_when_healthy() -> None:
    both_up = {("web", "a"): UP, ("web", "b"): UP}
    for kind in (OverrideKind.DRAIN, OverrideKind.MAINT):
        ops = ops_for({("web", "a"): Override(kind, "root")}, both_up)
        assert ops == ["edit real server TCP 10.0.0.1:80 -> 192.168.1.1:80 nat weight 0"]
    # maint keeps a down real server in the table at weight 0 instead of deleting it.
    ops = ops_for({("web", "a"): Override(OverrideKind.MAINT, "root")}, {("web", "a"): DOWN})
    assert ops == ["edit real server TCP 10.0.0.1:80 -> 192.168.1.1:80 nat weight 0"]


def test_weight_override_replaces_the_configured_weight_only_while_up() -> None:
    o = {("web", "a"): Override(OverrideKind.WEIGHT, "root", weight=2)}
    ops = ops_for(o, {("web", "a"): UP, ("web", "b"): UP})
    assert ops == ["edit real server TCP 10.0.0.1:80 -> 192.168.1.1:80 nat weight 2"]
    ops = ops_for(o, {("web", "a"): DOWN, ("web", "b"): UP})
    assert ops == ["delete real server TCP 10.0.0.1:80 -> 192.168.1.1:80"]


def test_why_names_the_override_owner_and_reason() -> None:
    o = Override(OverrideKind.DRAIN, "alice", reason="kernel upgrade")
    want = policy.desired(CONFIG, {}, {("web", "a"): o})[VS].real_servers[A]
    assert "drain by alice: kernel upgrade" in want.why


def test_expiry() -> None:
    keep = Override(OverrideKind.MAINT, "root", expires_at=None)
    soon = Override(OverrideKind.DRAIN, "root", expires_at=100.0)
    later = Override(OverrideKind.DRAIN, "root", expires_at=200.0)
    overrides = {("v", "1"): keep, ("v", "2"): soon, ("v", "3"): later}
    assert set(unexpired(overrides, 150.0)) == {("v", "1"), ("v", "3")}
    assert next_expiry(overrides) == 100.0
    assert next_expiry({("v", "1"): keep}) is None
    assert soon.describe(now=40.0).endswith("(expires in 60s)")


def test_json_round_trip() -> None:
    o = Override(OverrideKind.WEIGHT, "bob", "canary", 1.5, 99.0, 7)
    assert Override.from_json(o.to_json()) == o
