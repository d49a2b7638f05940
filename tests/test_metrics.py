"""What /metrics shows for the config, probe results, states and the kernel snapshot.

Each test reads the exposition the way Prometheus does (the text format, parsed), from a
``Metrics`` fed by plain in-memory sources and fake clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from healthd.checkspec import ProbeResult, Reason
from healthd.config import Config, parse_text
from healthd.metrics import Metrics, Sources
from healthd.model import (
    Desired,
    Forwarding,
    Health,
    Observed,
    ObservedRealServer,
    ObservedVirtualServer,
    RealServerSpec,
    TrafficStats,
)
from healthd.policy import REAL_SERVER_STATES, RealServerStatus, desired
from healthd.state import Subscriber

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

CONFIG = """
control: {enabled: false}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    scheduler: rr
    checks: [{type: tcp}]
    real_servers:
      - {name: a, address: 192.168.1.1, port: 80}
      - {name: b, address: 192.168.1.2, port: 80, weight: 3}
  - name: api
    fwmark: 7
    forwarding: dr
    on_failure: remove
    checks:
      - {type: http, name: health, https: true, verify: false, path: /h, expect_body: ok}
      - {type: script, name: custom, command: [/bin/true]}
    real_servers:
      - {name: x, address: 192.168.2.1, port: 443}
"""
WITHOUT_B = CONFIG.replace("      - {name: b, address: 192.168.1.2, port: 80, weight: 3}\n", "")


def config(text: str = CONFIG) -> Config:
    return parse_text(text, "test.yaml")


def scrape(metrics: Metrics) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(b"".join(metrics.exposition()).decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def get(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


def labelled(series: Series, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in series.items() if n == name and want <= lbl}


def names_with(series: Series, label: str, value: str) -> set[str]:
    return {n for (n, lbl) in series if (label, value) in lbl}


@dataclass
class World:
    """The daemon's snapshots as plain values a test can change."""

    config: Config = field(default_factory=config)
    states: dict[tuple[str, str], str] = field(default_factory=dict)
    desired: Desired = field(default_factory=dict)
    observed: Observed = field(default_factory=dict)
    wall: float = 1_700_000_000.0
    mono: float = 0.0

    def metrics(self) -> Metrics:
        return Metrics(
            Sources(
                config=lambda: self.config,
                status=dict,
                states=lambda: self.states,
                desired=lambda: self.desired,
                observed=lambda: self.observed,
                in_flight=lambda: 3,
            ),
            wall=lambda: self.wall,
            mono=lambda: self.mono,
        )


def probe(ok: bool, reason: Reason = Reason.OK, **extra: object) -> ProbeResult:
    return ProbeResult(ok, reason, "detail", 0.003, **extra)  # type: ignore[arg-type]


WEB_A = {"virtual_server": "web", "real_server": "a", "check": "tcp"}
API_HEALTH = {"virtual_server": "api", "real_server": "x", "check": "health"}


def test_every_configured_check_has_its_series_before_any_probe() -> None:
    s = scrape(World().metrics())
    checks = labelled(s, "healthd_check_attempts_total")
    assert {dict(lbl)["check"] for lbl in checks} == {"tcp", "health", "custom"}
    assert len(checks) == 4 and set(checks.values()) == {0.0}
    reasons = {
        check: {
            dict(lbl)["reason"] for lbl in labelled(s, "healthd_check_failures_total", check=check)
        }
        for check in ("tcp", "health", "custom")
    }
    assert reasons["tcp"] == {"refused", "timeout", "unreachable", "reset", "error"}
    assert {"tls", "body", "status", "protocol"} <= reasons["health"]
    assert reasons["custom"] == {"timeout", "exit", "signal", "error"}
    assert get(s, "healthd_check_duration_seconds_count", **WEB_A) == 0
    assert get(s, "healthd_check_duration_seconds_bucket", le="0.0005", **WEB_A) == 0
    assert get(s, "healthd_check_interval_seconds", **WEB_A) == 2.0
    assert get(s, "healthd_check_timeout_seconds", **WEB_A) == 1.0
    # The HTTP status exists for HTTP checks only; a certificate expiry only once one was seen.
    assert set(labelled(s, "healthd_check_http_status_code")) == {frozenset(API_HEALTH.items())}
    assert labelled(s, "healthd_check_tls_cert_expiry_timestamp_seconds") == {}


def test_the_timestamps_exported_are_unix_times_to_the_millisecond() -> None:
    world = World()
    world.wall = 1764900000.123456
    metrics = world.metrics()
    metrics.observe_probe([Subscriber("web", "a", "tcp")], probe(True))
    counts = [0] * len(metrics.duration_buckets)
    metrics.observe_successes([Subscriber("web", "b", "tcp")], 2, 0.006, counts, 1764900001.9876)
    s = scrape(metrics)
    assert get(s, "healthd_check_last_attempt_timestamp_seconds", **WEB_A) == 1764900000.123
    web_b = {**WEB_A, "real_server": "b"}
    assert get(s, "healthd_check_last_success_timestamp_seconds", **web_b) == 1764900001.988


def test_a_shared_probe_counts_for_every_subscriber_with_its_reason_and_latest_values() -> None:
    world = World()
    metrics = world.metrics()
    both = [Subscriber("web", "a", "tcp"), Subscriber("web", "b", "tcp")]
    metrics.observe_probe(both, probe(False, Reason.REFUSED))
    world.wall += 2
    metrics.observe_probe(both, probe(False, Reason.TIMEOUT))
    s = scrape(metrics)
    for rs in ("a", "b"):
        labels = {"virtual_server": "web", "real_server": rs, "check": "tcp"}
        assert get(s, "healthd_check_attempts_total", **labels) == 2
        assert get(s, "healthd_check_failures_total", reason="refused", **labels) == 1
        assert get(s, "healthd_check_failures_total", reason="timeout", **labels) == 1
        assert get(s, "healthd_check_failures_total", reason="reset", **labels) == 0
        assert get(s, "healthd_check_consecutive_failures", **labels) == 2
        assert get(s, "healthd_check_last_attempt_timestamp_seconds", **labels) == world.wall
        assert get(s, "healthd_check_last_success_timestamp_seconds", **labels) == 0
        assert get(s, "healthd_check_duration_seconds_bucket", le="0.0025", **labels) == 0
        assert get(s, "healthd_check_duration_seconds_bucket", le="0.005", **labels) == 2
        assert get(s, "healthd_check_duration_seconds_bucket", le="+Inf", **labels) == 2
    world.wall += 2
    metrics.observe_probe(both[:1], probe(True))
    s = scrape(metrics)
    assert get(s, "healthd_check_consecutive_failures", **WEB_A) == 0
    assert get(s, "healthd_check_last_success_timestamp_seconds", **WEB_A) == world.wall


def test_durations_per_virtual_server_pool_the_real_servers_histograms() -> None:
    world = World(
        config=config(
            CONFIG.replace("control:", "metrics: {check_duration: per_virtual_server}\ncontrol:")
        )
    )
    metrics = world.metrics()
    pooled = {"virtual_server": "web", "check": "tcp"}
    s = scrape(metrics)
    assert get(s, "healthd_check_duration_seconds_count", **pooled) == 0  # there before a probe
    assert get(s, "healthd_check_duration_seconds_count", **API_HEALTH) is None
    metrics.observe_probe([Subscriber("web", "a", "tcp")], probe(True))
    metrics.observe_probe([Subscriber("web", "b", "tcp")], probe(False, Reason.REFUSED))
    s = scrape(metrics)
    assert get(s, "healthd_check_duration_seconds_count", **pooled) == 2
    assert get(s, "healthd_check_duration_seconds_bucket", le="0.005", **pooled) == 2
    assert labelled(s, "healthd_check_duration_seconds_count", real_server="a") == {}
    # everything else stays per real server
    assert get(s, "healthd_check_attempts_total", **WEB_A) == 1
    assert {
        dict(lbl)["virtual_server"] for lbl in labelled(s, "healthd_check_duration_seconds_count")
    } == {"web", "api"}


def test_durations_off() -> None:
    world = World(
        config=config(CONFIG.replace("control:", "metrics: {check_duration: off}\ncontrol:"))
    )
    metrics = world.metrics()
    metrics.observe_probe([Subscriber("web", "a", "tcp")], probe(True))
    s = scrape(metrics)
    assert labelled(s, "healthd_check_duration_seconds_count") == {}
    assert get(s, "healthd_check_attempts_total", **WEB_A) == 1


def test_http_status_and_certificate_expiry_of_the_latest_response() -> None:
    metrics = World().metrics()
    health = [Subscriber("api", "x", "health")]
    metrics.observe_probe(health, probe(False, Reason.STATUS, http_status=503, tls_not_after=2e9))
    s = scrape(metrics)
    assert get(s, "healthd_check_http_status_code", **API_HEALTH) == 503
    assert get(s, "healthd_check_tls_cert_expiry_timestamp_seconds", **API_HEALTH) == 2e9
    assert get(s, "healthd_check_failures_total", reason="status", **API_HEALTH) == 1
    metrics.observe_probe(health, probe(False, Reason.REFUSED))
    s = scrape(metrics)
    assert get(s, "healthd_check_http_status_code", **API_HEALTH) == 0  # no response
    assert get(s, "healthd_check_tls_cert_expiry_timestamp_seconds", **API_HEALTH) == 2e9


def test_series_follow_the_config_and_a_returning_name_starts_from_zero() -> None:
    world = World()
    metrics = world.metrics()
    b = [Subscriber("web", "b", "tcp")]
    metrics.observe_probe(b, probe(False, Reason.REFUSED))
    before = scrape(metrics)
    assert get(before, "healthd_check_attempts_total", **{**WEB_A, "real_server": "b"}) == 1
    assert "healthd_real_server_state" in names_with(before, "real_server", "b")

    world.config = config(WITHOUT_B)  # a reload removes b
    metrics.sync_series(world.config)
    assert names_with(scrape(metrics), "real_server", "b") == set()

    world.config = config()  # and a later one brings it back
    metrics.sync_series(world.config)
    again = scrape(metrics)
    assert get(again, "healthd_check_attempts_total", **{**WEB_A, "real_server": "b"}) == 0
    assert names_with(again, "real_server", "b") == names_with(before, "real_server", "b")


def test_state_set_transitions_and_downtime() -> None:
    world = World(states={("web", "a"): "unknown", ("web", "b"): "unknown", ("api", "x"): "up"})
    metrics = world.metrics()
    metrics.sync_series(world.config)
    for state, mono in (("up", 1.0), ("down", 10.0), ("up", 30.0), ("down", 40.0)):
        world.states[("web", "a")] = state
        world.mono, world.wall = mono, 1_700_000_000.0 + mono
        metrics.refresh_states()  # as the daemon does on every health change
    world.states[("web", "a")] = "up"  # a flap between two scrapes still counts...
    world.mono = 45.0
    metrics.refresh_states()
    world.states[("web", "a")] = "down"
    world.mono = 50.0
    metrics.refresh_states()
    world.mono = 60.0  # ...and the scrape comes 10 s into the current outage
    s = scrape(metrics)
    a = {"virtual_server": "web", "real_server": "a"}
    states = {
        dict(lbl)["state"]: v for lbl, v in labelled(s, "healthd_real_server_state", **a).items()
    }
    assert states == {name: float(name == "down") for name in REAL_SERVER_STATES}
    moves = labelled(s, "healthd_real_server_transitions_total", **a)
    assert {dict(lbl)["to_state"]: v for lbl, v in moves.items()} == {
        "up": 3,
        "down": 3,
        "unknown": 0,
        "draining": 0,
        "drained": 0,
        "maintenance": 0,
    }
    assert get(s, "healthd_real_server_downtime_seconds_total", **a) == 20 + 5 + 10
    assert get(s, "healthd_real_server_last_transition_timestamp_seconds", **a) == (
        1_700_000_000.0 + 40.0  # the wall clock was last moved with the 4th change
    )
    b = {"virtual_server": "web", "real_server": "b"}
    assert get(s, "healthd_real_server_downtime_seconds_total", **b) == 0
    by_state = labelled(s, "healthd_virtual_server_real_servers", virtual_server="web")
    assert {dict(lbl)["state"]: v for lbl, v in by_state.items() if v} == {"down": 1, "unknown": 1}


def test_an_override_made_between_scrapes_shows_at_the_next_scrape() -> None:
    world = World(states={("web", "a"): "up"})
    metrics = world.metrics()
    metrics.sync_series(world.config)
    world.states[("web", "a")] = "maintenance"  # no daemon hook called
    s = scrape(metrics)
    a = {"virtual_server": "web", "real_server": "a"}
    assert get(s, "healthd_real_server_transitions_total", to_state="maintenance", **a) == 1
    assert get(s, "healthd_real_server_state", state="maintenance", **a) == 1


def _observed(cfg: Config, weights: dict[str, int]) -> Observed:
    """The kernel holding the real servers named in ``weights`` (web only)."""
    web = cfg.virtual_servers[0]
    real_servers = {
        rs.key: ObservedRealServer(
            RealServerSpec(rs.key, Forwarding.NAT, weights[rs.name]),
            active_connections=4,
            inactive_connections=7,
            persistent_connections=1,
            stats=TrafficStats(10, 100, 90, 6000, 50000, cps=99),
        )
        for rs in web.real_servers
        if rs.name in weights
    }
    return {
        web.key: ObservedVirtualServer(
            web.spec, real_servers, TrafficStats(12, 120, 110, 7000, 60000)
        )
    }


def test_weights_configured_desired_and_in_the_kernel() -> None:
    world = World()
    status = {
        ("web", "a"): RealServerStatus(Health.UP),
        ("web", "b"): RealServerStatus(Health.DOWN),  # inhibit: wanted at weight 0
        ("api", "x"): RealServerStatus(Health.DOWN),  # remove: wanted out of the kernel
    }
    world.desired = desired(world.config, status)
    world.observed = _observed(world.config, {"a": 1, "b": 3})  # b not yet inhibited: drift
    s = scrape(world.metrics())
    rs = lambda name: {"virtual_server": "web", "real_server": name}  # noqa: E731
    assert get(s, "healthd_real_server_configured_weight", **rs("b")) == 3
    assert get(s, "healthd_real_server_desired_weight", **rs("a")) == 1
    assert get(s, "healthd_real_server_desired_weight", **rs("b")) == 0
    assert get(s, "healthd_real_server_kernel_weight", **rs("b")) == 3
    x = {"virtual_server": "api", "real_server": "x"}
    assert get(s, "healthd_real_server_desired_weight", **x) is None  # wanted out
    assert get(s, "healthd_real_server_kernel_weight", **x) is None  # and it is out
    assert get(s, "healthd_real_server_configured_weight", **x) == 1


def test_kernel_stats_by_config_name_from_the_snapshot() -> None:
    world = World()
    world.observed = _observed(world.config, {"a": 1})  # b is not in the kernel
    s = scrape(world.metrics())
    a = {"virtual_server": "web", "real_server": "a"}
    assert get(s, "healthd_ipvs_real_server_connections_total", **a) == 10
    assert get(s, "healthd_ipvs_real_server_incoming_packets_total", **a) == 100
    assert get(s, "healthd_ipvs_real_server_outgoing_packets_total", **a) == 90
    assert get(s, "healthd_ipvs_real_server_incoming_bytes_total", **a) == 6000
    assert get(s, "healthd_ipvs_real_server_outgoing_bytes_total", **a) == 50000
    assert get(s, "healthd_ipvs_real_server_connections_active", **a) == 4
    assert get(s, "healthd_ipvs_real_server_connections_inactive", **a) == 7
    assert get(s, "healthd_ipvs_real_server_connections_persistent", **a) == 1
    assert get(s, "healthd_ipvs_virtual_server_connections_total", virtual_server="web") == 12
    assert get(s, "healthd_ipvs_virtual_server_outgoing_bytes_total", virtual_server="web") == 60000
    assert not [n for n in names_with(s, "real_server", "b") if n.startswith("healthd_ipvs_")]
    assert not [n for n in names_with(s, "virtual_server", "api") if n.startswith("healthd_ipvs_")]
    assert not [n for (n, _) in s if "per_s" in n or "cps" in n]  # no kernel rate estimates


def test_info_metrics_carry_the_attributes() -> None:
    s = scrape(World().metrics())
    assert (
        get(
            s,
            "healthd_virtual_server_info",
            virtual_server="api",
            address="",
            port="0",
            protocol="",
            fwmark="7",
            scheduler="wlc",
            forwarding="dr",
        )
        == 1
    )
    assert (
        get(
            s,
            "healthd_real_server_info",
            virtual_server="web",
            real_server="b",
            address="192.168.1.2",
            port="80",
            forwarding="nat",
        )
        == 1
    )


def test_daemon_families() -> None:
    world = World()
    metrics = world.metrics()
    s = scrape(metrics)
    assert get(s, "healthd_config_last_reload_successful") == 1
    assert get(s, "healthd_config_last_reload_success_timestamp_seconds") == world.wall
    assert get(s, "healthd_checks_in_flight") == 3
    assert get(s, "healthd_reconcile_last_success_timestamp_seconds") == 0
    assert labelled(s, "healthd_build_info")
    assert get(s, "process_start_time_seconds") is not None
    world.wall += 60
    metrics.observe_reload(False)  # refused: the old config runs on
    s = scrape(metrics)
    assert get(s, "healthd_config_last_reload_successful") == 0
    assert get(s, "healthd_config_last_reload_success_timestamp_seconds") == world.wall - 60
    metrics.observe_reload(True)
    s = scrape(metrics)
    assert get(s, "healthd_config_last_reload_successful") == 1
    assert get(s, "healthd_config_last_reload_success_timestamp_seconds") == world.wall


def test_no_created_series() -> None:
    assert not [n for (n, _) in scrape(World().metrics()) if n.endswith("_created")]
