"""Metrics as the daemon wires them: kernel requests, scrapes without netlink, loop lag, series
counts (the numbers docs/metrics.md documents)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthd.autoworkers import AutoScheduler
from healthd.config import parse_text
from healthd.daemon import Daemon
from healthd.histogram import DELAY_BUCKETS_S
from healthd.ipvs.errors import IpvsExists, IpvsNotFound, IpvsTransient
from healthd.ipvs.fake import FakeIpvs
from healthd.metrics import Metrics, TimedPort
from healthd.metrics.instrumented import watch_event_loop
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    Forwarding,
    Observed,
    Op,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
    VirtualServerSpec,
)

ROOT = Path(__file__).resolve().parents[1]
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(b"".join(metrics.exposition()).decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def daemon_config(tmp_path: Path, check: str, real_servers: int) -> str:
    lines = "".join(
        f"      - {{name: rs{i}, address: 192.168.1.{i}, port: 80}}\n"
        for i in range(1, real_servers + 1)
    )
    return f"""
control: {{enabled: false}}
state_file: {tmp_path}/state.json
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{check}]
    real_servers:
{lines}"""


async def started_daemon(tmp_path: Path, check: str = "{type: tcp}", n: int = 2) -> Daemon:
    config = parse_text(daemon_config(tmp_path, check, n), "test.yaml")
    daemon = Daemon(config, FakeIpvs())
    result = await daemon.reconciler.reconcile_once()
    assert result.ok
    return daemon


async def test_kernel_requests_are_counted_by_operation_and_scrapes_send_none(
    tmp_path: Path,
) -> None:
    daemon = await started_daemon(tmp_path)
    port = daemon.port
    assert isinstance(port, FakeIpvs)
    dumps = port.dumps
    for _ in range(3):
        s = scrape(daemon.metrics)
    assert port.dumps == dumps  # a scrape reads the snapshot, never the kernel
    requests = {
        dict(lbl)["operation"]: v
        for (n, lbl), v in s.items()
        if n == "healthd_netlink_requests_total"
    }
    assert requests["dump"] == dumps
    assert requests["add_virtual_server"] == 1
    assert requests["add_real_server"] == 2
    assert requests["delete_real_server"] == 0
    kernel = (
        "healthd_ipvs_real_server_connections_total",
        {"virtual_server": "web", "real_server": "rs1"},
    )
    assert s[(kernel[0], frozenset(kernel[1].items()))] == 0
    assert s[("healthd_reconcile_passes_total", frozenset())] == 1


class Flaky(FakeIpvs):
    """Fails a real server add the way a kernel short of buffers would."""

    async def apply(self, op: Op) -> None:
        if isinstance(op, AddRealServer) and op.spec.key.port == 81:
            raise IpvsTransient("ENOBUFS")
        await super().apply(op)


class Hangs(FakeIpvs):
    async def dump(self, keys: object, like: object = None) -> Observed:  # type: ignore[override]
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


async def test_timed_port_tells_answers_from_failures() -> None:
    seen: list[tuple[str, bool]] = []
    vs = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)
    rs = RealServerSpec(RealServerKey("192.168.1.1", 80), Forwarding.NAT, 1)
    port = TimedPort(Flaky(), lambda op, s, ok: seen.append((op, ok)))
    await port.apply(AddVirtualServer(VirtualServerSpec(vs)))
    with pytest.raises(IpvsExists):  # an answer: "it is already there"
        await port.apply(AddVirtualServer(VirtualServerSpec(vs)))
    with pytest.raises(IpvsNotFound):  # an answer: "it is already gone"
        await port.apply(DeleteRealServer(vs, rs.key))
    with pytest.raises(IpvsTransient):
        await port.apply(
            AddRealServer(vs, RealServerSpec(RealServerKey("192.168.1.1", 81), Forwarding.NAT, 1))
        )
    await port.dump([vs])
    assert seen == [
        ("add_virtual_server", True),
        ("add_virtual_server", True),
        ("delete_real_server", True),
        ("add_real_server", False),
        ("dump", True),
    ]
    hung = TimedPort(Hangs(), lambda op, s, ok: seen.append((op, ok)))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hung.dump([vs]), 0.05)  # the reconciler's per-request timeout
    assert seen[-1] == ("dump", False)


async def test_a_blocked_event_loop_shows_as_lag() -> None:
    lags: list[float] = []
    watcher = asyncio.create_task(watch_event_loop(lags.append, period_s=0.01))
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # a callback that blocks the loop (what a sync DNS lookup would do)
    await asyncio.sleep(0.05)
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
    # The watcher was due at most 10 ms into the block, and ran only after it: >= 0.29 s late.
    assert max(lags) >= 0.29


async def test_schedule_delay_in_flight_and_workers_are_wired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = await started_daemon(tmp_path)
    assert isinstance(daemon.scheduler, AutoScheduler)  # probes.workers: auto, the default
    assert scrape(daemon.metrics)[("healthd_probe_workers", frozenset())] == 0
    assert scrape(daemon.metrics)[("healthd_probe_engine_threads", frozenset())] == 0
    inner = daemon.scheduler._current  # the in-process scheduler
    inner._tasks_in_flight = 5
    assert inner._on_delay is not None
    inner._on_delay(0.2)
    daemon.scheduler.workers = 2  # as after a move to 2 worker processes
    # what a worker pool would hand over: a batch of two delays of at most 1 ms
    on_delays = daemon.scheduler._on_delays
    assert on_delays is not None
    on_delays([2] + [0] * (len(DELAY_BUCKETS_S) - 1), 2, 0.0015)
    s = scrape(daemon.metrics)
    assert s[("healthd_checks_in_flight", frozenset())] == 5
    assert s[("healthd_probe_workers", frozenset())] == 2
    # as after a move to the C engine's threads
    monkeypatch.setattr(AutoScheduler, "engine_threads", property(lambda self: 3))
    assert scrape(daemon.metrics)[("healthd_probe_engine_threads", frozenset())] == 3
    assert s[("healthd_check_schedule_delay_seconds_count", frozenset())] == 3
    assert s[("healthd_check_schedule_delay_seconds_sum", frozenset())] == pytest.approx(0.2015)
    assert s[("healthd_check_schedule_delay_seconds_bucket", frozenset({("le", "0.001")}))] == 2
    assert s[("healthd_check_schedule_delay_seconds_bucket", frozenset({("le", "0.1")}))] == 2
    assert s[("healthd_check_schedule_delay_seconds_bucket", frozenset({("le", "0.25")}))] == 3


# Measured series counts: one virtual server with real servers of one check each (timeout 1 s,
# so 11 duration buckets), after a reconcile pass put them in the kernel.  docs/metrics.md
# quotes these numbers.
SERIES_PER_REAL_SERVER = {
    "{type: tcp}": 51,
    "{type: http}": 54,
    "{type: http, https: true, expect_body: ok}": 56,
}
SERIES_PER_VIRTUAL_SERVER = 12


@pytest.mark.parametrize("check", list(SERIES_PER_REAL_SERVER))
async def test_series_per_real_server_as_documented(tmp_path: Path, check: str) -> None:
    daemon = await started_daemon(tmp_path, check, n=3)
    s = scrape(daemon.metrics)
    per_rs = [sum(1 for (_, lbl) in s if ("real_server", f"rs{i}") in lbl) for i in (1, 2, 3)]
    assert per_rs == [SERIES_PER_REAL_SERVER[check]] * 3
    vs_only = [
        k for k in s if ("virtual_server", "web") in k[1] and "real_server" not in dict(k[1])
    ]
    assert len(vs_only) == SERIES_PER_VIRTUAL_SERVER
    doc = (ROOT / "docs" / "metrics.md").read_text()
    numbers = [int(n) for n in re.findall(r"\|\s*\*\*(\d+)\*\*\s*\|", doc)]
    assert SERIES_PER_REAL_SERVER[check] in numbers
    assert SERIES_PER_VIRTUAL_SERVER in numbers


async def test_state_changes_an_override_brings_are_counted_at_the_next_pass(
    tmp_path: Path,
) -> None:
    """Health changes are counted as they come; what an override shows (draining, drained when
    the kernel counts no connection left, back to up when it is lifted) is counted by the pass
    that follows, not only at the next scrape: the time of the change is the pass's."""
    from healthd.checkspec import ProbeResult, Reason
    from healthd.overrides import Override, OverrideKind

    kernel = FakeIpvs()
    daemon = Daemon(parse_text(daemon_config(tmp_path, "{type: tcp}", 3), "test.yaml"), kernel)
    for key in daemon.book.probes:
        for _ in range(3):
            daemon.on_result(key, ProbeResult(True, Reason.OK, "connected", 0.001))
    assert (await daemon.reconciler.reconcile_once()).ok
    rs1 = RealServerKey("192.168.1.1", 80)
    vs = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)
    kernel.set_connections(vs, rs1, active=2, inactive=0)

    def counted(rs: str) -> tuple[str, dict[str, int]]:
        """The state the metrics hold (no scrape), and its transitions so far."""
        history = daemon.metrics.tracker.get(("web", rs))
        assert history is not None
        return history.state, dict(history.transitions or {})

    before = {rs: counted(rs)[1] for rs in ("rs1", "rs2", "rs3")}
    daemon.runtime.set_override("web", "rs1", Override(OverrideKind.DRAIN, "ops"))
    daemon.runtime.set_override("web", "rs3", Override(OverrideKind.MAINT, "ops"))
    assert (await daemon.reconciler.reconcile_once()).ok
    assert counted("rs1")[0] == "draining" and counted("rs3")[0] == "maintenance"
    kernel.set_connections(vs, rs1, active=0, inactive=0)
    assert (await daemon.reconciler.reconcile_once()).ok
    assert counted("rs1")[0] == "drained"
    daemon.runtime.set_override("web", "rs1", None)
    daemon.runtime.set_override("web", "rs3", None)
    assert (await daemon.reconciler.reconcile_once()).ok
    assert counted("rs1") == ("up", before["rs1"] | {"draining": 1, "drained": 1, "up": 2})
    assert counted("rs3") == ("up", before["rs3"] | {"maintenance": 1, "up": 2})
    assert counted("rs2") == ("up", before["rs2"])  # never changed: nothing counted


async def test_after_the_probes_move_the_daemon_gives_back_what_they_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move of the probes (to engine threads or workers) frees the runner they left: the next
    pass settles the heap (collect, freeze, give the free pages back), once per move."""
    import healthd.daemon

    daemon = await started_daemon(tmp_path)
    settles: list[int] = []
    monkeypatch.setattr(healthd.daemon, "settle_heap", lambda: settles.append(1))
    daemon._settle_at = None  # the start's settle is done
    await daemon.reconciler.reconcile_once()
    assert settles == []  # nothing moved
    monkeypatch.setattr(AutoScheduler, "engine_threads", property(lambda self: 1))
    await daemon.reconciler.reconcile_once()
    await daemon.reconciler.reconcile_once()
    assert settles == [1]
