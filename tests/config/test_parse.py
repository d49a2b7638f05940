"""The config parser: good files give documented values, bad ones ``FILE:LINE: path: what``.

Bad-file cases mark the offending line(s) with a trailing ``#!`` comment, so the expected line
numbers come from the text itself rather than from counting by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from healthd.checkspec import CheckTiming, HttpCheck, ScriptCheck, TcpCheck
from healthd.config import (
    CheckConfig,
    Config,
    ConfigError,
    ConfigIssue,
    OnStop,
    RealServerConfig,
    VirtualServerConfig,
    load,
    parse_text,
)
from healthd.model import (
    Forwarding,
    Health,
    OnFailure,
    Protocol,
    VirtualServerKey,
    VirtualServerSpec,
)

REPO = Path(__file__).resolve().parents[2]
FILE = "test.yaml"


def parse(text: str) -> Config:
    return parse_text(text, FILE)


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.issues


def marked_lines(text: str) -> list[int]:
    """1-based numbers of the lines that end with the ``#!`` marker."""
    return [n for n, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith("#!")]


def only_vs(config: Config) -> VirtualServerConfig:
    assert len(config.virtual_servers) == 1
    return config.virtual_servers[0]


# ---- good files ---------------------------------------------------------------------------------


def test_example_file_is_exactly_the_seed_topology() -> None:
    # etc/healthd.yaml documents: ipvsadm -A -t 10.0.0.1:80 -s rr, three -a ... -m real servers,
    # an http check on /healthz expecting 2xx, every 2s with a 1s timeout, rise 2, fall 3.
    config = load(str(REPO / "etc" / "healthd.yaml"))
    http = CheckConfig(
        name="http",
        spec=HttpCheck(path="/healthz", expect_status=((200, 299),)),
        timing=CheckTiming(interval_s=2.0, timeout_s=1.0, rise=2, fall=3, initial=Health.UNKNOWN),
    )
    expected = VirtualServerConfig(
        name="web",
        spec=VirtualServerSpec(
            key=VirtualServerKey(4, Protocol.TCP, "10.0.0.1", 80), scheduler="rr"
        ),
        on_failure=OnFailure.INHIBIT,
        real_servers=tuple(
            RealServerConfig(
                name=f"web-{n}",
                address=f"192.168.1.10{n}",
                port=80,
                weight=1,
                forwarding=Forwarding.NAT,
                checks=(http,),
            )
            for n in (1, 2, 3)
        ),
    )
    assert config.virtual_servers == (expected,)
    assert (config.metrics.host, config.metrics.port, config.metrics.enabled) == (
        "127.0.0.1",
        9540,
        True,
    )
    assert config.reconcile.interval_s == 5.0
    assert config.reconcile.on_stop is OnStop.KEEP
    assert str(expected.key) == "TCP 10.0.0.1:80"


INHERITANCE = """\
defaults:
  check: {interval: 5s, timeout: 2s, rise: 4, fall: 5}
  forwarding: tunnel
  scheduler: wlc
  weight: 7
  protocol: udp
  checks: [{type: tcp}]
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    check: {interval: 3s, rise: 1}
    scheduler: sh
    weight: 9
    forwarding: nat
    checks: [{type: http, path: /a}]
    real_servers:
      - {name: a, address: 192.168.1.1}
      - name: b
        address: 192.168.1.2
        weight: 3
        forwarding: dr
        check: {fall: 2}
        checks: [{type: tcp, port: 81, timeout: 500ms}, {type: script, command: [/bin/true]}]
  - name: dns
    address: 10.0.0.2
    port: 53
    real_servers:
      - {name: c, address: 192.168.1.3}
"""


def test_inheritance_defaults_then_virtual_server_then_real_server() -> None:
    web, dns = parse(INHERITANCE).virtual_servers

    # The virtual server overrides the defaults it names, and inherits the rest (protocol).
    assert web.spec.scheduler == "sh"
    assert web.key.protocol is Protocol.UDP
    a, b = web.real_servers
    assert (a.weight, a.forwarding, a.port) == (9, Forwarding.NAT, 80)
    assert [c.spec for c in a.checks] == [HttpCheck(path="/a")]
    # Timing: interval and rise from the virtual server, timeout and fall from the defaults.
    assert a.checks[0].timing == CheckTiming(interval_s=3.0, timeout_s=2.0, rise=1, fall=5)

    # The real server overrides again; its checks list replaces the virtual server's.
    assert (b.weight, b.forwarding) == (3, Forwarding.DR)
    script = ScriptCheck(command=("/bin/true",), user="nobody")  # scripts.user's default
    assert [c.spec for c in b.checks] == [TcpCheck(port=81), script]
    assert b.checks[0].timing == CheckTiming(interval_s=3.0, timeout_s=0.5, rise=1, fall=2)
    assert b.checks[1].timing == CheckTiming(interval_s=3.0, timeout_s=2.0, rise=1, fall=2)

    # A virtual server that sets nothing gets the defaults unchanged.
    assert dns.spec.scheduler == "wlc"
    assert dns.key == VirtualServerKey.for_address(Protocol.UDP, "10.0.0.2", 53)
    (c,) = dns.real_servers
    assert (c.weight, c.forwarding, c.port) == (7, Forwarding.TUNNEL, 53)
    assert [k.spec for k in c.checks] == [TcpCheck()]
    assert c.checks[0].timing == CheckTiming(interval_s=5.0, timeout_s=2.0, rise=4, fall=5)


def test_tcp_close_is_graceful_unless_reset_is_asked_for() -> None:
    (default,) = parse(VALID).virtual_servers[0].real_servers[0].checks
    assert default.spec == TcpCheck(close="graceful")
    text = VALID.replace("[{type: tcp}]", "[{type: tcp, close: reset}]")
    (reset,) = parse(text).virtual_servers[0].real_servers[0].checks
    assert reset.spec == TcpCheck(close="reset")


@pytest.mark.parametrize("granularity", ["per_real_server", "per_virtual_server", "off"])
def test_check_duration_granularity(granularity: str) -> None:
    config = parse(f"metrics: {{check_duration: {granularity}}}\n" + VALID)
    assert config.metrics.check_duration == granularity
    assert parse(VALID).metrics.check_duration == "per_real_server"


def test_built_in_defaults_when_nothing_is_said() -> None:
    vs = only_vs(
        parse(
            """\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp}]
    real_servers:
      - {name: a, address: 192.168.1.1}
"""
        )
    )
    assert vs.key.protocol is Protocol.TCP
    assert vs.spec.scheduler == "wlc"
    assert vs.on_failure is OnFailure.INHIBIT
    (rs,) = vs.real_servers
    assert (rs.port, rs.weight, rs.forwarding) == (80, 1, Forwarding.NAT)
    assert rs.checks[0].timing == CheckTiming()
    assert rs.checks[0].timing.initial is Health.UNKNOWN


def with_interval(interval: str) -> str:
    return f"""\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    check: {{interval: {interval}, timeout: 100ms}}
    checks: [{{type: tcp}}]
    real_servers:
      - {{name: a, address: 192.168.1.1}}
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("250ms", 0.25, id="milliseconds"),
        pytest.param("2s", 2.0, id="seconds"),
        pytest.param("1m", 60.0, id="minutes"),
        pytest.param("1.5s", 1.5, id="fractional"),
        pytest.param("3", 3.0, id="bare-integer"),
        pytest.param("2.5", 2.5, id="bare-float"),
        pytest.param('"4 s"', 4.0, id="space-before-unit"),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    (rs,) = only_vs(parse(with_interval(text))).real_servers
    assert rs.checks[0].timing.interval_s == pytest.approx(seconds)
    assert rs.checks[0].timing.timeout_s == pytest.approx(0.1)


def test_ipv6_addresses_are_normalised() -> None:
    vs = only_vs(
        parse(
            """\
virtual_servers:
  - name: v6
    address: 2001:DB8:0:0::1
    port: 443
    checks: []
    real_servers:
      - {name: a, address: "2001:0db8:0:0::00a"}
      - {name: b, address: "::ffff:192.168.1.1"}
"""
        )
    )
    assert vs.key == VirtualServerKey(6, Protocol.TCP, "2001:db8::1", 443)
    assert str(vs.key) == "TCP [2001:db8::1]:443"
    assert [rs.address for rs in vs.real_servers] == ["2001:db8::a", "::ffff:c0a8:101"]


def test_fwmark_virtual_servers() -> None:
    fw4, fw6 = parse(
        """\
virtual_servers:
  - name: fw
    fwmark: 7
    checks: []
    real_servers:
      - {name: a, address: 192.168.1.1, port: 8080}
      - {name: b, address: 192.168.1.2, forwarding: dr}
  - name: fw6
    fwmark: 7
    family: ipv6
    forwarding: dr
    checks: []
    real_servers:
      - {name: a, address: "2001:db8::a"}
"""
    ).virtual_servers
    assert fw4.key == VirtualServerKey.for_fwmark(7)
    assert (fw4.key.family, fw4.key.protocol, fw4.key.address, fw4.key.port) == (4, None, "", 0)
    assert str(fw4.key) == "FWM 7"
    assert [(rs.port, rs.forwarding) for rs in fw4.real_servers] == [
        (8080, Forwarding.NAT),
        (0, Forwarding.DR),
    ]
    # Same mark, other family: a different virtual server.
    assert fw6.key == VirtualServerKey.for_fwmark(7, family=6)
    assert fw6.key != fw4.key
    assert str(fw6.key) == "FWM 7 IPv6"
    assert fw6.real_servers[0].address == "2001:db8::a"


@pytest.mark.parametrize(
    "port_line",
    [pytest.param("", id="omitted"), pytest.param(", port: 443", id="same-as-virtual-server")],
)
@pytest.mark.parametrize("forwarding", ["dr", "tunnel"])
def test_dr_and_tunnel_use_the_virtual_server_port(port_line: str, forwarding: str) -> None:
    vs = only_vs(
        parse(
            f"""\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 443
    forwarding: {forwarding}
    checks: [{{type: tcp}}]
    real_servers:
      - {{name: a, address: 192.168.1.1{port_line}}}
"""
        )
    )
    (rs,) = vs.real_servers
    assert rs.port == 443
    assert rs.forwarding is Forwarding(forwarding)


def test_empty_checks_list_gives_a_static_real_server() -> None:
    vs = only_vs(
        parse(
            """\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp}]
    real_servers:
      - {name: checked, address: 192.168.1.1}
      - {name: static, address: 192.168.1.2, checks: []}
"""
        )
    )
    checked, static = vs.real_servers
    assert len(checked.checks) == 1
    assert static.checks == ()


def test_checks_without_names_are_named_by_type_and_made_unique() -> None:
    vs = only_vs(
        parse(
            """\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp}, {type: tcp, port: 22}, {type: http, name: app}]
    real_servers:
      - {name: a, address: 192.168.1.1}
"""
        )
    )
    assert [c.name for c in vs.real_servers[0].checks] == ["tcp", "tcp-2", "app"]


@pytest.mark.parametrize("state", ["up", "down", "unknown"])
def test_initial_state(state: str) -> None:
    vs = only_vs(
        parse(
            f"""\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    check: {{initial_state: {state}}}
    checks: [{{type: tcp}}]
    real_servers:
      - {{name: a, address: 192.168.1.1}}
"""
        )
    )
    assert vs.real_servers[0].checks[0].timing.initial is Health(state)


# ---- bad files: one issue each ------------------------------------------------------------------

# A valid file to break: replace one line and mark it.
VALID = """\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp}]
    real_servers:
      - {name: a, address: 192.168.1.1}
"""

BAD = [
    # ---- YAML syntax
    pytest.param(
        "virtual_servers:\n  - name: web\n    address: 10.0.0.1\n     port: 80 #!\n",
        "",
        ["invalid YAML", "mapping values are not allowed"],
        id="yaml-indentation",
    ),
    pytest.param(
        "virtual_servers:\n  - name: web\n\taddress: 10.0.0.1 #!\n",
        "",
        ["invalid YAML", "tab"],
        id="yaml-tab",
    ),
    # ---- unknown keys, at every level
    pytest.param(
        "virtul_servers: [] #!\n" + VALID,
        "virtul_servers",
        ["unknown key", "virtual_servers"],
        id="unknown-top-key",
    ),
    pytest.param(
        "defaults:\n  wieght: 2 #!\n" + VALID,
        "defaults.wieght",
        ["unknown key", "weight"],
        id="unknown-defaults-key",
    ),
    pytest.param(
        "defaults:\n  check:\n    intervall: 2s #!\n" + VALID,
        "defaults.check.intervall",
        ["unknown key", "interval"],
        id="unknown-timing-key",
    ),
    pytest.param(
        VALID.replace("    port: 80\n", "    port: 80\n    schedular: rr #!\n"),
        "virtual_servers[web].schedular",
        ["unknown key", "scheduler"],
        id="unknown-virtual-server-key",
    ),
    pytest.param(
        VALID.replace("192.168.1.1}", "192.168.1.1, wait: 1} #!"),
        "virtual_servers[web].real_servers[a].wait",
        ["unknown key", "weight"],
        id="unknown-real-server-key",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: tcp, prot: 81}] #!"),
        "virtual_servers[web].checks[0].prot",
        ["unknown key", "port"],
        id="unknown-check-key",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: tcp, path: /healthz}] #!"),
        "virtual_servers[web].checks[0].path",
        ["unknown key"],
        id="http-key-on-tcp-check",
    ),
    pytest.param(
        VALID.replace("  - name: web\n", "  - name: web\n    name: www #!\n"),
        "virtual_servers[web].name",
        ["duplicate key"],
        id="duplicate-yaml-key",
    ),
    # ---- addresses and ports (real server ports given, so only one thing is wrong)
    pytest.param(
        VALID.replace("10.0.0.1", "10.0.0.256 #!").replace("1.1}", "1.1, port: 80}"),
        "virtual_servers[web].address",
        ["invalid IP address '10.0.0.256'"],
        id="bad-vs-address",
    ),
    pytest.param(
        VALID.replace("192.168.1.1}", "192.168.1.x} #!"),
        "virtual_servers[web].real_servers[a].address",
        ["invalid IP address '192.168.1.x'"],
        id="bad-rs-address",
    ),
    pytest.param(
        VALID.replace("port: 80", "port: 0 #!").replace("1.1}", "1.1, port: 80}"),
        "virtual_servers[web].port",
        ["0 is out of range (1..65535)"],
        id="port-0",
    ),
    pytest.param(
        VALID.replace("port: 80", "port: 65536 #!").replace("1.1}", "1.1, port: 80}"),
        "virtual_servers[web].port",
        ["65536 is out of range (1..65535)"],
        id="port-65536",
    ),
    pytest.param(
        VALID.replace("port: 80", 'port: "80" #!').replace("1.1}", "1.1, port: 80}"),
        "virtual_servers[web].port",
        ["must be an integer"],
        id="port-string",
    ),
    pytest.param(
        VALID.replace("192.168.1.1}", "192.168.1.1, port: 0} #!"),
        "virtual_servers[web].real_servers[a].port",
        ["0 is out of range (1..65535)"],
        id="rs-port-0",
    ),
    pytest.param(
        VALID.replace("192.168.1.1}", '"2001:db8::a"} #!'),
        "virtual_servers[web].real_servers[a].address",
        ["address family", "IPv4"],
        id="rs-family-mismatch",
    ),
    # ---- choices
    pytest.param(
        VALID.replace("    port: 80\n", "    port: 80\n    scheduler: fastest #!\n"),
        "virtual_servers[web].scheduler",
        ["unknown scheduler 'fastest'", "wlc"],
        id="unknown-scheduler",
    ),
    pytest.param(
        VALID.replace("    port: 80\n", "    port: 80\n    forwarding: masq #!\n"),
        "virtual_servers[web].forwarding",
        ["unknown forwarding 'masq'", "nat"],
        id="unknown-forwarding",
    ),
    pytest.param(
        "defaults:\n  forwarding: route #!\n" + VALID,
        "defaults.forwarding",
        ["unknown forwarding 'route'"],
        id="unknown-forwarding-in-defaults",
    ),
    pytest.param(
        VALID.replace("    port: 80\n", "    port: 80\n    protocol: icmp #!\n"),
        "virtual_servers[web].protocol",
        ["unknown protocol 'icmp'", "sctp"],
        id="unknown-protocol",
    ),
    pytest.param(
        VALID.replace("    port: 80\n", "    port: 80\n    on_failure: drain #!\n"),
        "virtual_servers[web].on_failure",
        ["unknown on_failure 'drain'", "inhibit", "remove"],
        id="unknown-on-failure",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: ping}] #!"),
        "virtual_servers[web].checks[0].type",
        ["unknown check type 'ping'"],
        id="unknown-check-type",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{port: 81}] #!"),
        "virtual_servers[web].checks[0]",
        ["type is missing"],
        id="check-type-missing",
    ),
    # ---- duplicates (reported on the second one)
    pytest.param(
        VALID
        + VALID.split("\n", 1)[1]
        .replace("  - name: web", "  - name: web #!")
        .replace("10.0.0.1", "10.0.0.2"),
        "virtual_servers[web]",
        ["duplicate name 'web'"],
        id="duplicate-vs-name",
    ),
    pytest.param(
        """\
virtual_servers:
  - name: web
    address: "2001:db8::1"
    port: 80
    checks: []
    real_servers: [{name: a, address: "2001:db8::a"}]
  - name: www #!
    address: "2001:DB8:0::1"
    port: 80
    checks: []
    real_servers: [{name: a, address: "2001:db8::a"}]
""",
        "virtual_servers[www]",
        ["duplicate address 'TCP [2001:db8::1]:80'", "'web'"],
        id="duplicate-vs-address-after-normalisation",
    ),
    pytest.param(
        VALID + "      - {name: a, address: 192.168.1.2} #!\n",
        "virtual_servers[web].real_servers[a]",
        ["duplicate name 'a'"],
        id="duplicate-rs-name",
    ),
    pytest.param(
        VALID + "      - {name: b, address: 192.168.1.1, port: 80} #!\n",
        "virtual_servers[web].real_servers[b]",
        ["duplicate address '192.168.1.1:80'", "'a'"],
        id="duplicate-rs-address-inherited-port",
    ),
    # ---- timing ranges
    pytest.param(
        "defaults:\n  check:\n    rise: 0 #!\n" + VALID,
        "defaults.check.rise",
        ["0 is out of range (1..100)"],
        id="rise-0",
    ),
    pytest.param(
        "defaults:\n  check:\n    rise: 101 #!\n" + VALID,
        "defaults.check.rise",
        ["101 is out of range (1..100)"],
        id="rise-101",
    ),
    pytest.param(
        "defaults:\n  check:\n    fall: 0 #!\n" + VALID,
        "defaults.check.fall",
        ["0 is out of range (1..100)"],
        id="fall-0",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: tcp, fall: 1000}] #!"),
        "virtual_servers[web].checks[0].fall",
        ["1000 is out of range (1..100)"],
        id="fall-1000-on-check",
    ),
    pytest.param(
        "metrics:\n  check_duration: per_check #!\n" + VALID,
        "metrics.check_duration",
        ["unknown check_duration granularity 'per_check'", "per_virtual_server"],
        id="check-duration-granularity",
    ),
    pytest.param(
        "defaults:\n  check:\n    interval: 10ms #!\n" + VALID,
        "defaults.check.interval",
        ["10ms is out of range (50ms..60m)"],
        id="interval-too-short",
    ),
    pytest.param(
        "defaults:\n  check:\n    interval: 2h #!\n" + VALID,
        "defaults.check.interval",
        ["2h is out of range (50ms..60m)"],
        id="interval-too-long",
    ),
    pytest.param(
        "defaults:\n  check:\n    interval: soon #!\n" + VALID,
        "defaults.check.interval",
        ["invalid duration 'soon'", "250ms"],
        id="interval-not-a-duration",
    ),
    pytest.param(
        "defaults:\n  check:\n    interval: -1 #!\n" + VALID,
        "defaults.check.interval",
        ["invalid duration -1"],
        id="interval-negative",
    ),
    pytest.param(
        "defaults:\n  check:\n    timeout: 1ms #!\n" + VALID,
        "defaults.check.timeout",
        ["1ms is out of range (10ms..60m)"],
        id="timeout-too-short",
    ),
    # ---- timeout must be shorter than interval: once, where it was set
    pytest.param(
        "defaults:\n  check:\n    interval: 2s\n    timeout: 2s #!\n" + VALID,
        "defaults.check.timeout",
        ["timeout (2s) must be shorter than interval (2s)"],
        id="timeout-equals-interval",
    ),
    pytest.param(
        "defaults:\n  check:\n    interval: 500ms #!\n" + VALID,
        "defaults.check.interval",
        ["timeout (1s) must be shorter than interval (0.5s)"],
        id="interval-below-default-timeout",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: tcp, timeout: 5s}] #!")
        + "      - {name: b, address: 192.168.1.2}\n"
        + "      - {name: c, address: 192.168.1.3}\n",
        "virtual_servers[web].checks[0].timeout",
        ["timeout (5s) must be shorter than interval (2s)"],
        id="timeout-on-shared-check-reported-once",
    ),
    pytest.param(
        VALID.replace("192.168.1.1}", "192.168.1.1, check: {timeout: 3s}} #!"),
        "virtual_servers[web].real_servers[a].check.timeout",
        ["timeout (3s) must be shorter than interval (2s)"],
        id="timeout-on-real-server",
    ),
    # ---- virtual server identity
    pytest.param(
        VALID.replace("    port: 80\n", "    port: 80\n    fwmark: 7\n")
        .replace("  - name: web", "  - name: web #!")
        .replace("1.1}", "1.1, port: 80}"),
        "virtual_servers[web]",
        ["fwmark and address/port are exclusive"],
        id="fwmark-with-address",
    ),
    pytest.param(
        VALID.replace("    port: 80\n", "    port: 80\n    family: ipv6 #!\n"),
        "virtual_servers[web].family",
        ["only for fwmark"],
        id="family-with-address",
    ),
    pytest.param(
        VALID.replace("    address: 10.0.0.1\n", "")
        .replace("  - name: web", "  - name: web #!")
        .replace("1.1}", "1.1, port: 80}"),
        "virtual_servers[web]",
        ["address is missing"],
        id="missing-address",
    ),
    pytest.param(
        VALID.replace("    port: 80\n", "")
        .replace("  - name: web", "  - name: web #!")
        .replace("1.1}", "1.1, port: 80}"),
        "virtual_servers[web]",
        ["port is missing"],
        id="missing-port",
    ),
    pytest.param(
        VALID.replace("  - name: web\n    address: 10.0.0.1", "  - address: 10.0.0.1 #!"),
        "virtual_servers[0]",
        ["name is missing"],
        id="missing-vs-name",
    ),
    pytest.param(
        VALID.replace("{name: a, address", "{address").replace("1.1}", "1.1} #!"),
        "virtual_servers[web].real_servers[0]",
        ["name is missing"],
        id="missing-rs-name",
    ),
    pytest.param(
        VALID.replace(", address: 192.168.1.1", "").replace("{name: a}", "{name: a} #!"),
        "virtual_servers[web].real_servers[a]",
        ["address is missing"],
        id="missing-rs-address",
    ),
    pytest.param(
        VALID.split("    real_servers:")[0].replace("  - name: web", "  - name: web #!"),
        "virtual_servers[web]",
        ["real_servers is missing"],
        id="missing-real-servers",
    ),
    pytest.param(
        "defaults: {weight: 1} #!\n",
        "",
        ["virtual_servers is missing"],
        id="missing-virtual-servers",
    ),
    pytest.param(
        "virtual_servers: [] #!\n",
        "virtual_servers",
        ["at least one virtual server"],
        id="no-virtual-servers",
    ),
    pytest.param(
        VALID.replace("    checks: [{type: tcp}]\n", "").replace("1.1}", "1.1} #!"),
        "virtual_servers[web].real_servers[a]",
        ["no checks", "checks: []"],
        id="no-checks-anywhere",
    ),
    # ---- check contents
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: script, command: [check.sh, web]}] #!"),
        "virtual_servers[web].checks[0].command",
        ["absolute path", "'check.sh'"],
        id="script-relative-command",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: script}] #!"),
        "virtual_servers[web].checks[0]",
        ["command is missing"],
        id="script-without-command",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: http, expect_status: [200, 2xx]}] #!"),
        "virtual_servers[web].checks[0].expect_status[1]",
        ["invalid status '2xx'"],
        id="expect-status-not-a-code",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", '[{type: http, expect_status: ["300-600"]}] #!'),
        "virtual_servers[web].checks[0].expect_status[0]",
        ["invalid status '300-600'"],
        id="expect-status-above-599",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", '[{type: http, expect_status: ["299-200"]}] #!'),
        "virtual_servers[web].checks[0].expect_status[0]",
        ["invalid status '299-200'"],
        id="expect-status-reversed-range",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", '[{type: http, expect_body: "ok("}] #!'),
        "virtual_servers[web].checks[0].expect_body",
        ["invalid regular expression"],
        id="expect-body-bad-regex",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: tcp, close: fin}] #!"),
        "virtual_servers[web].checks[0].close",
        ["unknown close mode 'fin'", "graceful, reset"],
        id="tcp-close-unknown",
    ),
    pytest.param(
        VALID.replace("[{type: tcp}]", "[{type: http, path: healthz}] #!"),
        "virtual_servers[web].checks[0].path",
        ["must start with /"],
        id="http-relative-path",
    ),
    # ---- whole-file shapes
    pytest.param("", "", ["the file is empty"], id="empty-file"),
    pytest.param("# only a comment\n", "", ["the file is empty"], id="comment-only-file"),
    pytest.param("- web #!\n- db\n", "", ["must be a mapping"], id="file-is-a-list"),
    pytest.param("virtual_servers #!\n", "", ["must be a mapping"], id="file-is-a-scalar"),
]


@pytest.mark.parametrize(("text", "path", "fragments"), BAD)
def test_bad_file_reports_one_issue_at_the_right_place(
    text: str, path: str, fragments: list[str]
) -> None:
    lines = marked_lines(text) or [1]
    assert len(lines) == 1, "test case must mark exactly one line"
    (issue,) = issues_of(text)
    assert (issue.file, issue.line, issue.path) == (FILE, lines[0], path)
    prefix = f"{FILE}:{lines[0]}: {path}: " if path else f"{FILE}:{lines[0]}: "
    assert str(issue).startswith(prefix)
    for fragment in fragments:
        assert fragment in issue.message


def test_unknown_key_message_lists_the_keys_allowed_there() -> None:
    text = VALID.replace("[{type: tcp}]", "[{type: tcp, path: /healthz}]")
    (issue,) = issues_of(text)
    expected = issue.message.split("expected one of: ", 1)[1].rstrip(")").split(", ")
    assert "port" in expected  # a tcp check does take a port...
    assert "path" not in expected  # ...but not an http path


def test_config_error_text_is_one_issue_per_line() -> None:
    text = VALID.replace("10.0.0.1", "10.0.0.256").replace("1.1}", "1.1, port: 0}")
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value).splitlines() == [str(i) for i in info.value.issues]
    assert str(info.value).splitlines() == [
        "test.yaml:3: virtual_servers[web].address: invalid IP address '10.0.0.256'",
        "test.yaml:7: virtual_servers[web].real_servers[a].port: 0 is out of range (1..65535)",
    ]


def test_several_errors_are_all_reported_sorted_by_line() -> None:
    text = """\
bogus: 1 #!
virtual_servers:
  - name: web
    address: 10.0.0.999 #!
    port: 80
    scheduler: fastest #!
    checks: [{type: tcp, timeout: 3s}] #!
    real_servers:
      - {name: a, address: 192.168.1.1, port: 0} #!
      - {name: b, address: 192.168.1.2, port: 80, weight: 70000} #!
defaults:
  forwarding: magic #!
"""
    found = issues_of(text)
    assert [i.line for i in found] == marked_lines(text)
    assert [i.path for i in found] == [
        "bogus",
        "virtual_servers[web].address",
        "virtual_servers[web].scheduler",
        "virtual_servers[web].checks[0].timeout",
        "virtual_servers[web].real_servers[a].port",
        "virtual_servers[web].real_servers[b].weight",
        "defaults.forwarding",
    ]


def test_an_error_in_defaults_is_reported_once_not_per_virtual_server() -> None:
    text = (
        "defaults:\n  scheduler: fastest #!\n"
        + VALID
        + VALID.split("\n", 1)[1].replace("name: web", "name: www").replace("10.0.0.1", "10.0.0.2")
    )
    (issue,) = issues_of(text)
    assert (issue.line, issue.path) == (marked_lines(text)[0], "defaults.scheduler")


def test_load_missing_file() -> None:
    path = str(REPO / "no-such-dir" / "healthd.yaml")
    with pytest.raises(ConfigError) as info:
        load(path)
    (issue,) = info.value.issues
    assert (issue.file, issue.line) == (path, 1)
    assert issue.message.startswith("cannot read")
    assert str(issue).startswith(f"{path}:1: cannot read")


def test_load_reports_the_real_file_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("port: 80", "port: 0"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert all(i.file == str(path) for i in info.value.issues)
    assert str(info.value).startswith(f"{path}:4: virtual_servers[web].port: ")


# ---- bugs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(VALID.replace("10.0.0.1", "10.0.0.256"), id="bad-address"),
        pytest.param(VALID.replace("    address: 10.0.0.1\n", ""), id="missing-address"),
        pytest.param(VALID.replace("port: 80", "port: 0"), id="bad-port"),
        pytest.param(VALID.replace("    port: 80\n", ""), id="missing-port"),
    ],
)
def test_bad_virtual_server_address_is_not_blamed_on_its_real_servers(text: str) -> None:
    found = issues_of(text)
    assert len(found) == 1, [str(i) for i in found]
    assert not found[0].path.startswith("virtual_servers[web].real_servers")


def test_unquoted_ipv6_address_is_read_as_written() -> None:
    text = """\
virtual_servers:
  - name: v6
    address: "2001:db8::1"
    port: 80
    checks: []
    real_servers:
      - {name: a, address: 2001:0:0:0:0:0:0:1}
"""
    try:
        vs = only_vs(parse(text))
    except ConfigError as exc:
        # Rejecting it is acceptable only if the message shows what the user wrote.
        assert "2001:0:0:0:0:0:0:1" in str(exc)
    else:
        assert vs.real_servers[0].address == "2001::1"


def test_empty_expect_status_is_an_error_not_a_silent_default() -> None:
    text = (
        "virtual_servers:\n"
        "  - name: web\n"
        "    address: 10.0.0.1\n"
        "    port: 80\n"
        "    checks: [{type: http, expect_status: []}]\n"
        "    real_servers: [{name: a, address: 192.168.1.1}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_text(text, "test.yaml")
    assert [str(i) for i in caught.value.issues] == [
        "test.yaml:5: virtual_servers[web].checks[0].expect_status: "
        "must list at least one status or range"
    ]


def test_protocol_on_a_fwmark_virtual_server_is_an_error() -> None:
    text = (
        "virtual_servers:\n"
        "  - name: marked\n"
        "    fwmark: 7\n"
        "    protocol: udp\n"
        "    checks: [{type: tcp}]\n"
        "    real_servers: [{name: a, address: 192.168.1.1, port: 80}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_text(text, "test.yaml")
    assert [str(i) for i in caught.value.issues] == [
        "test.yaml:4: virtual_servers[marked].protocol: a fwmark virtual server has no protocol "
        "(the mark selects packets)"
    ]


def test_nothing_of_the_yaml_document_outlives_the_parse() -> None:
    # A config of thousands of real servers is hundreds of thousands of YAML nodes: the daemon
    # must not keep them (12 MB at 10 000 real servers when the scalar constructor cached them).
    import gc

    import yaml.nodes

    lines = [
        "virtual_servers:",
        "  - {name: web, address: 10.0.0.1, port: 80, checks: [{type: tcp}],",
    ]
    lines.append("     real_servers: [")
    lines += [f"       {{name: rs{i}, address: 192.168.1.{i}, weight: {i}}}," for i in range(1, 50)]
    lines.append("     ]}")
    cfg = parse_text("\n".join(lines) + "\n", "big.yaml")
    assert len(cfg.virtual_servers[0].real_servers) == 49
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, yaml.nodes.Node)]
