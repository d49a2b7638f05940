"""Reload as a diff: what carries over, what restarts, what retires, and that the kernel sees
only the difference (through plan() on the in-memory IPVS)."""

from __future__ import annotations

from typing import Any

import pytest

from healthd.checkspec import ProbeResult, Reason
from healthd.config import Config, parse_text
from healthd.ipvs.fake import FakeIpvs
from healthd.model import Health, Protocol, RealServerKey, VirtualServerKey
from healthd.overrides import Override, OverrideKind
from healthd.plan import plan
from healthd.runtime import Runtime, UnknownRealServer

BASE = """
defaults: {{check: {{interval: 1s, timeout: 500ms, rise: 1, fall: 1}}}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    on_failure: {on_failure}
    checks: [{{type: tcp}}]
    real_servers:
      - {{name: a, address: 192.168.1.1, weight: 1}}
      - {{name: b, address: 192.168.1.2, weight: 1}}
{rest}"""
VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)


def cfg(on_failure: str = "inhibit", rest: str = "", **repl: str) -> Config:
    text = BASE.format(on_failure=on_failure, rest=rest)
    for old, new in repl.items():
        text = text.replace(old.replace("_", " "), new)
    return parse_text(text, "t.yaml")


def feed(rt: Runtime, ok: dict[str, bool]) -> None:
    for key in list(rt.book.probes):
        if key.target.address in ok:
            result = ProbeResult(ok[key.target.address], Reason.OK, "x", 0.001)
            rt.record(key, result, now=1.0)


def converge(rt: Runtime, fake: FakeIpvs) -> list[str]:
    ops = plan(rt.desired(now=2.0), fake.snapshot(rt.desired(now=2.0).keys()))
    for op in ops:
        fake.apply_now(op)
    return [str(op) for op in ops]


def health(rt: Runtime, rs: str) -> Health:
    return rt.book.status()[("web", rs)].health


def test_identical_reload_changes_nothing() -> None:
    rt = Runtime(cfg(), now=0.0)
    fake = FakeIpvs()
    feed(rt, {"192.168.1.1": True, "192.168.1.2": False})
    converge(rt, fake)
    summary = rt.apply_config(cfg(), now=5.0)
    assert (summary.added, summary.removed, summary.changed) == ((), (), ())
    assert summary.probes_started == summary.probes_stopped == 0
    assert converge(rt, fake) == []
    assert health(rt, "a") is Health.UP and health(rt, "b") is Health.DOWN


def test_weight_change_is_one_edit_and_a_down_server_is_not_re_added() -> None:
    rt = Runtime(cfg(), now=0.0)
    fake = FakeIpvs()
    feed(rt, {"192.168.1.1": True, "192.168.1.2": False})
    converge(rt, fake)
    text = (
        BASE.format(on_failure="inhibit", rest="")
        .replace("192.168.1.1, weight: 1", "192.168.1.1, weight: 4")
        .replace("192.168.1.2, weight: 1", "192.168.1.2, weight: 9")
    )
    summary = rt.apply_config(parse_text(text, "t.yaml"), now=5.0)
    assert summary.changed == (("web", "a"), ("web", "b"))
    assert summary.probes_started == 0  # checks did not change: no probe restarts
    ops = converge(rt, fake)
    assert ops == ["edit real server TCP 10.0.0.1:80 -> 192.168.1.1:80 nat weight 4"]
    assert health(rt, "b") is Health.DOWN  # still down, still weight 0


def test_changed_check_restarts_only_that_check_and_keeps_the_weight_until_a_verdict() -> None:
    rt = Runtime(cfg(), now=0.0)
    fake = FakeIpvs()
    feed(rt, {"192.168.1.1": True, "192.168.1.2": False})
    converge(rt, fake)
    rest = ""
    text = BASE.format(on_failure="inhibit", rest=rest).replace(
        "{name: b, address: 192.168.1.2, weight: 1}",
        "{name: b, address: 192.168.1.2, weight: 1, checks: [{type: tcp, port: 81}]}",
    )
    summary = rt.apply_config(parse_text(text, "t.yaml"), now=5.0)
    assert summary.changed == (("web", "b"),)
    assert (summary.probes_started, summary.probes_stopped) == (1, 1)
    assert health(rt, "a") is Health.UP
    assert health(rt, "b") is Health.UNKNOWN
    assert converge(rt, fake) == []  # unknown keeps the kernel's weight (0): not re-added


def test_new_real_server_enters_by_its_initial_state() -> None:
    rt = Runtime(cfg(), now=0.0)
    fake = FakeIpvs()
    feed(rt, {"192.168.1.1": True, "192.168.1.2": True})
    converge(rt, fake)
    text = BASE.format(on_failure="inhibit", rest="").replace(
        "      - {name: b, address: 192.168.1.2, weight: 1}\n",
        "      - {name: b, address: 192.168.1.2, weight: 1}\n"
        "      - {name: c, address: 192.168.1.3, weight: 1}\n",
    )
    summary = rt.apply_config(parse_text(text, "t.yaml"), now=5.0)
    assert summary.added == (("web", "c"),)
    assert rt.since[("web", "c")] == 5.0
    assert rt.since[("web", "a")] == 1.0  # its last change (unknown -> up), kept
    assert converge(rt, fake) == ["add real server TCP 10.0.0.1:80 -> 192.168.1.3:80 nat weight 0"]


def test_removed_real_server_drains_then_leaves_in_inhibit_mode() -> None:
    rt = Runtime(cfg(), now=0.0)
    fake = FakeIpvs()
    feed(rt, {"192.168.1.1": True, "192.168.1.2": True})
    converge(rt, fake)
    fake.set_connections(VS, RealServerKey("192.168.1.2", 80), active=3, inactive=1)
    text = BASE.format(on_failure="inhibit", rest="").replace(
        "      - {name: b, address: 192.168.1.2, weight: 1}\n", ""
    )
    summary = rt.apply_config(parse_text(text, "t.yaml"), now=5.0)
    assert summary.removed == (("web", "b"),)
    assert converge(rt, fake) == ["edit real server TCP 10.0.0.1:80 -> 192.168.1.2:80 nat weight 0"]
    assert converge(rt, fake) == []  # connections remain: it stays at weight 0
    fake.set_connections(VS, RealServerKey("192.168.1.2", 80), active=0, inactive=0)
    assert converge(rt, fake) == ["delete real server TCP 10.0.0.1:80 -> 192.168.1.2:80"]
    assert rt.forget_departed(fake.snapshot())
    assert converge(rt, fake) == []


def test_removed_real_server_is_deleted_at_once_in_remove_mode() -> None:
    rt = Runtime(cfg("remove"), now=0.0)
    fake = FakeIpvs()
    feed(rt, {"192.168.1.1": True, "192.168.1.2": True})
    converge(rt, fake)
    fake.set_connections(VS, RealServerKey("192.168.1.2", 80), active=3, inactive=1)
    text = BASE.format(on_failure="remove", rest="").replace(
        "      - {name: b, address: 192.168.1.2, weight: 1}\n", ""
    )
    rt.apply_config(parse_text(text, "t.yaml"), now=5.0)
    assert converge(rt, fake) == ["delete real server TCP 10.0.0.1:80 -> 192.168.1.2:80"]


def test_removed_virtual_server_retires_and_a_foreign_one_is_never_touched() -> None:
    extra = """  - name: api
    address: 10.0.0.2
    port: 443
    checks: [{type: tcp}]
    real_servers:
      - {name: x, address: 192.168.1.9}
"""
    rt = Runtime(cfg(rest=extra), now=0.0)
    fake = FakeIpvs()
    feed(rt, {"192.168.1.1": True, "192.168.1.2": True, "192.168.1.9": True})
    converge(rt, fake)
    summary = rt.apply_config(cfg(), now=5.0)
    assert summary.virtual_servers_retired == ("api",)
    api = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.2", 443)
    assert converge(rt, fake) == ["delete real server TCP 10.0.0.2:443 -> 192.168.1.9:443"]
    assert converge(rt, fake) == ["delete virtual server TCP 10.0.0.2:443"]
    assert rt.forget_departed(fake.snapshot())
    assert api not in rt.desired(now=9.0)


def test_overrides_follow_names_and_unknown_names_are_refused() -> None:
    rt = Runtime(cfg(), now=0.0)
    rt.set_override("web", "a", Override(OverrideKind.MAINT, "root"))
    try:
        rt.set_override("web", "zz", Override(OverrideKind.MAINT, "root"))
    except UnknownRealServer as exc:
        assert "unknown real server 'zz' in virtual server 'web' (known: a, b)" in str(exc)
    else:
        raise AssertionError("no error for an unknown real server")
    text = BASE.format(on_failure="inhibit", rest="").replace(
        "      - {name: a, address: 192.168.1.1, weight: 1}\n", ""
    )
    rt.apply_config(parse_text(text, "t.yaml"), now=5.0)
    assert rt.overrides == {}  # its real server left the config: so did the override


def test_states_of_some_real_servers_follow_the_current_config() -> None:
    rt = Runtime(cfg(), now=0.0)
    fake = FakeIpvs()
    feed(rt, {"192.168.1.1": True, "192.168.1.2": False})
    converge(rt, fake)
    observed = fake.snapshot([VS])
    everyone = rt.states(observed, now=3.0)
    assert everyone == {("web", "a"): "up", ("web", "b"): "down"}
    assert rt.states(observed, 3.0, only=[("web", "b")]) == {("web", "b"): "down"}
    # after a reload that removes b, asking for it gives nothing (the lookup follows the config)
    rt.apply_config(cfg(**{"      - {name: b, address: 192.168.1.2, weight: 1}": ""}), now=4.0)
    assert rt.states(observed, 4.0, only=[("web", "b"), ("web", "a")]) == {("web", "a"): "up"}


def test_the_desired_table_is_rebuilt_exactly_when_something_it_depends_on_changes() -> None:
    # Unchanged inputs give last pass's table (no rebuild per periodic pass); each kind of
    # change shows in the next one.
    rt = Runtime(cfg(), now=0.0)
    feed(rt, {"192.168.1.1": True, "192.168.1.2": True})
    a, b = RealServerKey("192.168.1.1", 80), RealServerKey("192.168.1.2", 80)

    def weights(now: float) -> dict[RealServerKey, int]:
        return {k: d.spec.weight for k, d in rt.desired(now)[VS].real_servers.items()}

    first = rt.desired(now=2.0)
    assert rt.desired(now=3.0) is first
    assert weights(3.0) == {a: 1, b: 1}

    feed(rt, {"192.168.1.2": False})  # health
    assert weights(4.0) == {a: 1, b: 0}

    rt.set_override("web", "a", Override(OverrideKind.DRAIN, "ops", expires_at=10.0))
    assert weights(5.0) == {a: 0, b: 0}  # an override
    assert weights(11.0) == {a: 1, b: 0}  # ... that expired by the clock alone

    rt.apply_config(cfg(), now=12.0)
    rt.apply_config(cfg(rest="", **{"weight: 1}": "weight: 4}"}), now=13.0)  # a reload
    assert weights(14.0) == {a: 4, b: 0}

    rt.apply_config(cfg(**{"- {name: b, address: 192.168.1.2, weight: 1}": ""}), now=15.0)
    retiring = rt.desired(16.0)[VS].real_servers[b]  # removed: retiring, drained first
    assert retiring.drain_then_delete and retiring.spec.weight == 0
    assert rt.forget_departed({})  # it left the kernel
    assert b not in rt.desired(17.0)[VS].real_servers


def test_after_verdicts_the_table_is_the_one_built_anew_and_only_they_are_computed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from healthd import policy

    rt = Runtime(cfg(), now=0.0)
    feed(rt, {"192.168.1.1": True, "192.168.1.2": True})
    rt.desired(now=2.0)
    computed: list[str] = []
    compute = policy.desired_real_server

    def counting(vs: Any, rs: Any, *args: Any) -> Any:
        computed.append(rs.name)
        return compute(vs, rs, *args)

    monkeypatch.setattr(policy, "desired_real_server", counting)
    feed(rt, {"192.168.1.2": False})
    table = rt.desired(now=3.0)
    assert computed == ["b"]
    fresh = policy.desired(rt.config, rt.book.status(), {})
    assert table == fresh
    computed.clear()
    rt.set_override("web", "a", Override(OverrideKind.DRAIN, "ops"))  # not a verdict: all again
    assert rt.desired(now=4.0)[VS].real_servers[RealServerKey("192.168.1.1", 80)].spec.weight == 0
    assert sorted(computed) == ["a"]  # the basis still spares the unchanged ones


def test_every_real_servers_state_follows_verdicts_overrides_and_reloads() -> None:
    """The states of all real servers are kept between calls and brought up to date: each
    call still shows what the book, the overrides and the config say at that moment."""
    rt = Runtime(cfg(), now=0.0)
    fake = FakeIpvs()
    assert rt.states({}, now=1.0) == {("web", "a"): "unknown", ("web", "b"): "unknown"}
    feed(rt, {"192.168.1.1": True, "192.168.1.2": True})
    assert rt.states({}, now=1.0) == {("web", "a"): "up", ("web", "b"): "up"}
    feed(rt, {"192.168.1.2": False})
    converge(rt, fake)
    observed = fake.snapshot([VS])
    shown = rt.states(observed, now=2.0)
    assert shown == {("web", "a"): "up", ("web", "b"): "down"}
    shown[("web", "a")] = "changed by a caller"  # each call's dict is the caller's own
    rt.set_override("web", "a", Override(OverrideKind.MAINT, "ops", expires_at=5.0))
    assert rt.states(observed, now=3.0) == {("web", "a"): "maintenance", ("web", "b"): "down"}
    assert rt.states(observed, now=6.0) == {("web", "a"): "up", ("web", "b"): "down"}  # expired
    rt.apply_config(cfg(**{"      - {name: b, address: 192.168.1.2, weight: 1}": ""}), now=7.0)
    assert rt.states(observed, now=7.0) == {("web", "a"): "up"}
    feed(rt, {"192.168.1.1": False})
    assert rt.states(observed, now=8.0) == {("web", "a"): "down"}


def test_a_verdict_that_changes_back_while_an_override_is_set_is_not_taken_from_the_patch() -> None:
    """b goes down (the table is patched), then comes back up while an override is set on a:
    the table computed anew must show b up again, not the patched entry."""
    rt = Runtime(cfg(), now=0.0)
    feed(rt, {"192.168.1.1": True, "192.168.1.2": True})
    a, b = RealServerKey("192.168.1.1", 80), RealServerKey("192.168.1.2", 80)
    rt.desired(now=2.0)
    feed(rt, {"192.168.1.2": False})
    assert rt.desired(now=3.0)[VS].real_servers[b].spec.weight == 0  # patched
    feed(rt, {"192.168.1.2": True})
    rt.set_override("web", "a", Override(OverrideKind.DRAIN, "ops"))
    table = rt.desired(now=4.0)[VS].real_servers
    assert (table[a].spec.weight, table[b].spec.weight) == (0, 1)
