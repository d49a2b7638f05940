"""Pool policy: every cell of the table in healthd/policy.py's docstring, for inhibit and remove.

Each cell is checked twice: through ``wanted_weight`` (the weight healthd wants in the kernel,
None for absent) with the kernel lacking the real server or holding it at another weight, and
through ``plan`` (the operations a user sees in the log / dry-run).
"""

from __future__ import annotations

import pytest

from healthd.config import Config, VirtualServerConfig, parse_text
from healthd.model import (
    AddRealServer,
    DeleteRealServer,
    EditRealServer,
    Forwarding,
    Health,
    ObservedRealServer,
    ObservedVirtualServer,
    RealServerKey,
    RealServerSpec,
)
from healthd.plan import plan, wanted_weight
from healthd.policy import UNKNOWN, RealServerStatus, desired, desired_real_server

CONFIGURED = 3  # the configured weight
BY_HAND = 5  # a weight the kernel holds that healthd did not set
DETAIL = "HTTP GET 192.168.1.1:80/healthz: status 503"
RS_KEY = RealServerKey("192.168.1.1", 80)


def config(on_failure: str) -> Config:
    return parse_text(
        f"""\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    on_failure: {on_failure}
    checks: [{{type: http, path: /healthz}}]
    real_servers:
      - {{name: a, address: 192.168.1.1, weight: {CONFIGURED}}}
  - name: api
    address: 10.0.0.2
    port: 443
    on_failure: {on_failure}
    checks: [{{type: tcp}}]
    real_servers:
      - {{name: a, address: 192.168.1.1}}
      - {{name: b, address: 192.168.1.2}}
""",
        "policy.yaml",
    )


def web(on_failure: str) -> VirtualServerConfig:
    return config(on_failure).virtual_servers[0]


def kernel_spec(weight: int) -> RealServerSpec:
    return RealServerSpec(RS_KEY, Forwarding.NAT, weight)


# (health, on_failure) -> (weight wanted if the kernel lacks it, if the kernel has it at BY_HAND)
# None means "absent".  Straight from the policy table.
TABLE = [
    pytest.param(Health.UP, "inhibit", CONFIGURED, CONFIGURED, id="up-inhibit"),
    pytest.param(Health.UP, "remove", CONFIGURED, CONFIGURED, id="up-remove"),
    pytest.param(Health.DOWN, "inhibit", 0, 0, id="down-inhibit"),
    pytest.param(Health.DOWN, "remove", None, None, id="down-remove"),
    pytest.param(Health.UNKNOWN, "inhibit", 0, BY_HAND, id="unknown-inhibit"),
    pytest.param(Health.UNKNOWN, "remove", None, BY_HAND, id="unknown-remove"),
]


@pytest.mark.parametrize(("state", "on_failure", "if_absent", "if_present"), TABLE)
def test_policy_table_weights(
    state: Health, on_failure: str, if_absent: int | None, if_present: int | None
) -> None:
    vs = web(on_failure)
    want = desired_real_server(vs, vs.real_servers[0], RealServerStatus(state, DETAIL))
    assert want.spec.key == RS_KEY
    assert want.spec.forwarding is Forwarding.NAT
    assert wanted_weight(want, None) == if_absent
    assert wanted_weight(want, kernel_spec(BY_HAND)) == if_present


@pytest.mark.parametrize(("state", "on_failure", "if_absent", "if_present"), TABLE)
def test_policy_table_as_kernel_operations(
    state: Health, on_failure: str, if_absent: int | None, if_present: int | None
) -> None:
    cfg = config(on_failure)
    vs = cfg.virtual_servers[0]
    table = desired(cfg, {("web", "a"): RealServerStatus(state, DETAIL)})
    only_web = {vs.key: table[vs.key]}

    # The kernel has the virtual server but not this real server.
    empty = {vs.key: ObservedVirtualServer(vs.spec, {})}
    ops = plan(only_web, empty)
    if if_absent is None:
        assert ops == []
    else:
        (op,) = ops
        assert isinstance(op, AddRealServer)
        assert (op.spec.key, op.spec.weight) == (RS_KEY, if_absent)

    # The kernel has it, at a weight someone set by hand.
    held = {
        vs.key: ObservedVirtualServer(vs.spec, {RS_KEY: ObservedRealServer(kernel_spec(BY_HAND))})
    }
    ops = plan(only_web, held)
    if if_present is None:
        assert ops == [DeleteRealServer(vs.key, RS_KEY, reason=ops[0].reason)]
    elif if_present == BY_HAND:
        assert ops == []
    else:
        (op,) = ops
        assert isinstance(op, EditRealServer)
        assert (op.spec.key, op.spec.weight) == (RS_KEY, if_present)


@pytest.mark.parametrize("state", [Health.UP, Health.DOWN, Health.UNKNOWN])
@pytest.mark.parametrize("on_failure", ["inhibit", "remove"])
def test_why_names_the_real_server_its_health_and_the_probe_detail(
    state: Health, on_failure: str
) -> None:
    vs = web(on_failure)
    want = desired_real_server(vs, vs.real_servers[0], RealServerStatus(state, DETAIL))
    assert "web/a" in want.why
    assert state.value in want.why
    assert DETAIL in want.why


def test_down_in_remove_mode_deletes_with_the_probe_detail_as_reason() -> None:
    cfg = config("remove")
    vs = cfg.virtual_servers[0]
    table = desired(cfg, {("web", "a"): RealServerStatus(Health.DOWN, DETAIL)})
    held = {vs.key: ObservedVirtualServer(vs.spec, {RS_KEY: ObservedRealServer(kernel_spec(3))})}
    (op,) = plan({vs.key: table[vs.key]}, held)
    assert isinstance(op, DeleteRealServer)
    assert "web/a" in op.reason
    assert DETAIL in op.reason


def test_desired_covers_every_configured_virtual_and_real_server() -> None:
    cfg = config("inhibit")
    web_vs, api_vs = cfg.virtual_servers
    status = {
        ("web", "a"): RealServerStatus(Health.UP, "tcp: ok"),
        ("api", "a"): RealServerStatus(Health.DOWN, "tcp: refused"),
        # ("api", "b") has no verdict yet
    }
    table = desired(cfg, status)
    assert set(table) == {web_vs.key, api_vs.key}
    assert table[web_vs.key].spec == web_vs.spec
    assert table[api_vs.key].spec == api_vs.spec

    api = table[api_vs.key].real_servers
    assert set(api) == {RealServerKey("192.168.1.1", 443), RealServerKey("192.168.1.2", 443)}
    # The same address in two virtual servers is judged per virtual server.
    assert table[web_vs.key].real_servers[RS_KEY].spec.weight == CONFIGURED
    assert api[RealServerKey("192.168.1.1", 443)].spec.weight == 0
    assert "refused" in api[RealServerKey("192.168.1.1", 443)].why
    # No verdict: treated as UNKNOWN.
    b = api[RealServerKey("192.168.1.2", 443)]
    assert b.adopt_weight
    assert "api/b" in b.why
    assert UNKNOWN.why in b.why


def test_a_pass_keeps_the_objects_of_what_did_not_change_and_shows_what_did() -> None:
    # Rebuilt every reconcile pass: unchanged real servers keep their object (they do not age
    # through the garbage collector), a changed one is the new value, never a stale one.
    cfg = config("inhibit")
    web_vs, api_vs = cfg.virtual_servers
    up = RealServerStatus(Health.UP, "tcp: ok")
    status = {("web", "a"): up, ("api", "a"): up, ("api", "b"): up}
    first = desired(cfg, status)
    same = desired(cfg, dict(status), previous=first)
    assert same[web_vs.key] is first[web_vs.key]
    assert same[api_vs.key] is first[api_vs.key]

    status[("api", "b")] = RealServerStatus(Health.DOWN, "tcp: connection refused")
    second = desired(cfg, status, previous=first)
    assert second == desired(cfg, status)  # the same table as one built from nothing
    assert second[web_vs.key] is first[web_vs.key]
    api_before, api_after = first[api_vs.key].real_servers, second[api_vs.key].real_servers
    a, b = RealServerKey("192.168.1.1", 443), RealServerKey("192.168.1.2", 443)
    assert api_after[a] is api_before[a]
    assert api_after[b].spec.weight == 0
    assert "connection refused" in api_after[b].why


def test_with_its_basis_a_table_computes_only_what_changed_and_equals_one_built_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from healthd import policy
    from healthd.overrides import Override, OverrideKind

    cfg = config("inhibit")
    _, api_vs = cfg.virtual_servers
    up = RealServerStatus(Health.UP, "tcp: ok")
    status = {("web", "a"): up, ("api", "a"): up, ("api", "b"): up}
    first = desired(cfg, status)
    basis = policy.Basis(cfg, dict(status), {})
    computed: list[str] = []
    compute = policy.desired_real_server

    def counting(vs: VirtualServerConfig, rs: object, *args: object) -> object:
        computed.append(f"{vs.name}/{rs.name}")  # type: ignore[attr-defined]
        return compute(vs, rs, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(policy, "desired_real_server", counting)
    status[("api", "b")] = RealServerStatus(Health.DOWN, "tcp: connection refused")
    second = desired(cfg, status, previous=first, basis=basis)
    assert computed == ["api/b"]
    assert second[api_vs.key].real_servers[RealServerKey("192.168.1.2", 443)].spec.weight == 0

    # an override set on another real server: that one is computed again, and shows it
    computed.clear()
    drain = {("api", "a"): Override(OverrideKind.DRAIN, "root")}
    third = desired(cfg, status, drain, previous=second, basis=policy.Basis(cfg, dict(status), {}))
    assert computed == ["api/a"]
    assert third[api_vs.key].real_servers[RealServerKey("192.168.1.1", 443)].spec.weight == 0
    monkeypatch.undo()
    assert third == desired(cfg, status, drain)

    # another config (a reload): every entry computed again, none taken from the old basis
    reloaded = config("remove")
    fourth = desired(reloaded, status, previous=third, basis=policy.Basis(cfg, status, drain))
    assert fourth == desired(reloaded, status)


@pytest.mark.parametrize("on_failure", ["inhibit", "remove"])
def test_a_table_patched_for_changed_verdicts_equals_one_built_anew(on_failure: str) -> None:
    from itertools import product

    from healthd import policy
    from healthd.overrides import Override, OverrideKind

    cfg = config(on_failure)
    servers = {
        rs_id: (vs, rs)
        for vs in cfg.virtual_servers
        for rs, rs_id in zip(vs.real_servers, vs.rs_ids, strict=True)
    }
    statuses = [
        RealServerStatus(Health.UP, "tcp: ok"),
        RealServerStatus(Health.DOWN, "tcp: connection refused"),
        UNKNOWN,
    ]
    drain = {("api", "a"): Override(OverrideKind.DRAIN, "ops")}
    ids = list(servers)
    for before, after in product(product(statuses, repeat=3), repeat=2):
        status = dict(zip(ids, before, strict=True))
        previous = desired(cfg, status, drain)
        status = dict(zip(ids, after, strict=True))
        changed = [rs_id for rs_id, b, a in zip(ids, before, after, strict=True) if a is not b]
        table = policy.patched(previous, status, drain, changed, servers)
        assert table == desired(cfg, status, drain)
        for key, vs in table.items():  # what did not change keeps its objects
            for rs_key, entry in vs.real_servers.items():
                if entry == previous[key].real_servers[rs_key]:
                    assert entry is previous[key].real_servers[rs_key]
            if vs == previous[key]:
                assert vs.real_servers is previous[key].real_servers
