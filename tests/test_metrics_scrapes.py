"""Scrape after scrape: what a scrape keeps from the one before never hides a change.

Each scrape of a long-lived ``Metrics`` is compared with what collectors built afresh write for
the same state (records, state history, snapshots), and the changed values are read back.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from healthd.checkspec import ProbeResult, Reason
from healthd.config import Config, parse_text
from healthd.metrics import Metrics, Sources
from healthd.metrics.collectors import ChecksCollector, PoolCollector
from healthd.metrics.kernel import KernelCollector
from healthd.metrics.text import ROWS_PER_PIECE
from healthd.model import (
    Forwarding,
    Observed,
    ObservedRealServer,
    ObservedVirtualServer,
    RealServerSpec,
    TrafficStats,
)
from healthd.state import Subscriber

CONFIG = """
control: {enabled: false}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp, interval: 2s}]
    real_servers:
      - {name: a, address: 192.168.1.1, port: 80}
      - {name: b, address: 192.168.1.2, port: 80, weight: 3}
  - name: api
    fwmark: 7
    checks: [{type: http, name: health, https: true, verify: false, path: /h}]
    real_servers:
      - {name: x, address: 192.168.2.1, port: 443}
"""


class World:
    def __init__(self, config: str = CONFIG) -> None:
        self.config = parse_text(config, "test.yaml")
        self.states = {
            (vs.name, rs.name): "up" for vs in self.config.virtual_servers for rs in vs.real_servers
        }
        self.observed: Observed = _observed(self.config, connections=10)
        self.wall, self.mono = 1_700_000_000.0, 0.0
        self.sources = Sources(
            config=lambda: self.config,
            status=dict,
            states=lambda: self.states,
            desired=dict,
            observed=lambda: self.observed,
        )
        self.metrics = Metrics(self.sources, wall=lambda: self.wall, mono=lambda: self.mono)
        self.metrics.sync_series(self.config)

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = b"".join(self.metrics.exposition())
        assert _bulk(text) == self.fresh()  # nothing stale
        out = {}
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    def fresh(self) -> bytes:
        """The bulk families written by collectors that have kept nothing."""
        m = self.metrics
        collectors = (
            ChecksCollector(
                self.sources.config, m.records, m.duration_buckets, m.pooled, m.granularity
            ),
            PoolCollector(self.sources, m.tracker, lambda: self.wall, lambda: self.mono),
            KernelCollector(self.sources.config, self.sources.observed),
        )
        return b"".join(piece for c in collectors for piece in c.pieces())

    def probe(self, rs: str, ok: bool, reason: Reason = Reason.OK) -> None:
        self.wall += 1
        result = ProbeResult(ok, reason, "", 0.003)
        self.metrics.observe_probe([Subscriber("web", rs, "tcp")], result)


def _bulk(text: bytes) -> bytes:
    """The hand-written families: everything from the first of them on."""
    return text[text.index(b"# HELP healthd_check_attempts_total") :]


def _observed(cfg: Config, connections: int) -> Observed:
    web = cfg.virtual_servers[0]
    real_servers = {
        rs.key: ObservedRealServer(
            RealServerSpec(rs.key, Forwarding.NAT, rs.weight),
            stats=TrafficStats(connections, 100, 90, 6000, 50000),
        )
        for rs in web.real_servers
    }
    return {web.key: ObservedVirtualServer(web.spec, real_servers, TrafficStats(connections))}


A = frozenset({("virtual_server", "web"), ("real_server", "a")})


def _check(rs: str, **more: str) -> frozenset[tuple[str, str]]:
    return frozenset(
        {("virtual_server", "web"), ("real_server", rs), ("check", "tcp"), *more.items()}
    )


def test_a_failure_after_scrapes_without_change_shows() -> None:
    world = World()
    for _ in range(3):  # the same values three times: the text is kept
        world.probe("a", True)
        assert world.scrape()[("healthd_check_failures_total", _check("b", reason="refused"))] == 0
    world.probe("b", False, Reason.REFUSED)
    s = world.scrape()
    assert s[("healthd_check_failures_total", _check("b", reason="refused"))] == 1
    assert s[("healthd_check_consecutive_failures", _check("b"))] == 1
    world.probe("b", True)
    s = world.scrape()
    assert s[("healthd_check_consecutive_failures", _check("b"))] == 0


def test_kernel_counters_and_states_that_change_between_scrapes_show() -> None:
    world = World()
    world.scrape()
    world.scrape()
    world.observed = _observed(world.config, connections=11)  # the next reconcile pass
    s = world.scrape()
    assert s[("healthd_ipvs_real_server_connections_total", A)] == 11
    world.states[("web", "a")] = "down"
    world.mono += 5
    world.scrape()
    world.mono += 5
    s = world.scrape()
    assert s[("healthd_real_server_state", A | {("state", "down")})] == 1
    assert s[("healthd_real_server_transitions_total", A | {("to_state", "down")})] == 1
    assert s[("healthd_real_server_downtime_seconds_total", A)] == 5


def test_a_reload_that_changes_settings_but_no_name_shows() -> None:
    world = World()
    world.scrape()
    world.scrape()
    world.config = parse_text(CONFIG.replace("interval: 2s", "interval: 3s"), "test.yaml")
    world.metrics.sync_series(world.config)
    s = world.scrape()
    assert s[("healthd_check_interval_seconds", _check("a"))] == 3


def test_a_certificate_seen_after_scrapes_without_one_shows() -> None:
    world = World()
    world.scrape()
    world.scrape()
    result = ProbeResult(True, Reason.OK, "", 0.01, http_status=200, tls_not_after=1.8e9)
    world.metrics.observe_probe([Subscriber("api", "x", "health")], result)
    s = world.scrape()
    x = frozenset({("virtual_server", "api"), ("real_server", "x"), ("check", "health")})
    assert s[("healthd_check_tls_cert_expiry_timestamp_seconds", x)] == 1.8e9


def test_a_scrape_given_up_halfway_leaves_the_next_one_whole() -> None:
    """A client that goes away mid-answer stops the writing in the middle of a family; what
    changed meanwhile and what was left unwritten both show in the next scrape."""
    many = "\n".join(
        f"      - {{name: r{i}, address: 192.168.3.{i % 250 + 1}, port: {1000 + i}}}"
        for i in range(2 * ROWS_PER_PIECE + 10)
    )
    world = World(
        CONFIG + "  - name: big\n    address: 10.0.0.9\n    port: 80\n"
        "    checks: [{type: tcp}]\n    real_servers:\n" + many + "\n"
    )
    pieces = world.metrics.pieces()  # the first scrape: what it writes is kept as text
    for piece in pieces:
        if piece.startswith(b"# HELP healthd_real_server_state "):
            break  # the first of its three pieces
    world.probe("b", False, Reason.REFUSED)
    pieces.close()
    s = world.scrape()
    assert s[("healthd_check_failures_total", _check("b", reason="refused"))] == 1
    big = frozenset({("virtual_server", "big"), ("real_server", f"r{2 * ROWS_PER_PIECE}")})
    assert s[("healthd_real_server_state", big | {("state", "up")})] == 1


def test_every_series_of_a_large_config_carries_its_own_labels_across_pieces() -> None:
    """The check and info label blocks are joined when a piece is written (not kept): over
    several pieces, each check's series names its own real server and check, each real server's
    info its own address and port, each HTTP check's status its own labels."""
    n = ROWS_PER_PIECE + 7
    many = "\n".join(
        f"      - {{name: r{i}, address: 192.168.{4 + i // 250}.{i % 250 + 1}, port: {1000 + i}}}"
        for i in range(n)
    )
    world = World(
        CONFIG + "  - name: big\n    address: 10.0.0.9\n    port: 80\n"
        "    checks: [{type: tcp}, {type: http, name: web, path: /}]\n"
        "    real_servers:\n" + many + "\n"
    )
    s = world.scrape()
    attempts = {labels for name, labels in s if name == "healthd_check_attempts_total"}
    status = {labels for name, labels in s if name == "healthd_check_http_status_code"}
    info = {labels for name, labels in s if name == "healthd_real_server_info"}
    for i in range(n):
        rs = {("virtual_server", "big"), ("real_server", f"r{i}")}
        assert frozenset(rs | {("check", "tcp")}) in attempts
        assert frozenset(rs | {("check", "web")}) in attempts
        assert frozenset(rs | {("check", "web")}) in status
        address = ("address", f"192.168.{4 + i // 250}.{i % 250 + 1}")
        assert frozenset(rs | {address, ("port", str(1000 + i)), ("forwarding", "nat")}) in info
    assert len(attempts) == 2 * n + 3 and len(status) == n + 1 and len(info) == n + 3
