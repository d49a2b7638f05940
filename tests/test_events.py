"""The JSON-lines event log: format, destinations, rotation, errors, and the daemon's events."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from healthd.checkspec import ProbeResult, Reason
from healthd.config import parse_text
from healthd.daemon import Daemon
from healthd.events import EventLog, timestamp
from healthd.ipvs.fake import FakeIpvs
from healthd.model import (
    AddRealServer,
    DeleteVirtualServer,
    Forwarding,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
)
from healthd.overrides import Override, OverrideKind

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
VS = VirtualServerKey.for_address(Protocol.TCP, "10.0.0.1", 80)


def lines(path: Path) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in path.read_text().splitlines()]
    for event in out:
        assert TS.match(event.pop("ts")), event
    return out


def test_timestamp_is_rfc3339_utc_with_milliseconds() -> None:
    when = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert timestamp(when) == "2024-05-01T12:00:00.123Z"
    assert TS.match(timestamp())


def test_every_event_kind_is_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(str(path))
    log.state_change(
        virtual_server="web",
        real_server="web-1",
        check="http",
        before="up",
        after="down",
        reason="HTTP GET 192.168.1.101:80/healthz: status 503",
    )
    spec = RealServerSpec(RealServerKey("192.168.1.101", 80), Forwarding.NAT, 0)
    log.kernel_op(AddRealServer(VS, spec, "web/web-1 down"), ok=True, dry_run=False)
    log.kernel_op(DeleteVirtualServer(VS, "on_stop"), ok=False, error="ENOENT", dry_run=True)
    log.override(
        virtual_server="web",
        real_server="web-1",
        action="drain",
        weight=0,
        owner="root",
        reason="kernel upgrade",
        expires="2024-05-01T12:30:00.000Z",
    )
    log.reload(ok=False, error="healthd.yaml:3: port: must be 1..65535")
    log.notify(command=["/usr/local/bin/page", "x"], exit=0, output="sent", state="down")
    log.close()
    assert lines(path) == [
        {
            "event": "state_change",
            "virtual_server": "web",
            "real_server": "web-1",
            "check": "http",
            "from": "up",
            "to": "down",
            "reason": "HTTP GET 192.168.1.101:80/healthz: status 503",
        },
        {
            "event": "kernel_op",
            "op": "add_real_server",
            "virtual_server": "TCP 10.0.0.1:80",
            "real_server": "192.168.1.101:80",
            "weight": 0,
            "forwarding": "nat",
            "reason": "web/web-1 down",
            "dry_run": False,
            "ok": True,
            "error": None,
        },
        {
            "event": "kernel_op",
            "op": "delete_virtual_server",
            "virtual_server": "TCP 10.0.0.1:80",
            "real_server": None,
            "weight": None,
            "forwarding": None,
            "reason": "on_stop",
            "dry_run": True,
            "ok": False,
            "error": "ENOENT",
        },
        {
            "event": "override",
            "virtual_server": "web",
            "real_server": "web-1",
            "action": "drain",
            "weight": 0,
            "owner": "root",
            "reason": "kernel upgrade",
            "expires": "2024-05-01T12:30:00.000Z",
        },
        {"event": "reload", "ok": False, "error": "healthd.yaml:3: port: must be 1..65535"},
        {
            "event": "notify",
            "command": ["/usr/local/bin/page", "x"],
            "exit": 0,
            "output": "sent",
            "state": "down",
        },
    ]


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"ts": "2024-01-01T00:00:00.000Z", "event": "reload", "ok": true}\n')
    log = EventLog(str(path))
    log.reload(ok=True)
    log.close()
    assert [e["event"] for e in lines(path)] == ["reload", "reload"]


def test_dash_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    log = EventLog("-")
    log.reload(ok=True)
    event = json.loads(capsys.readouterr().out)
    assert (event["event"], event["ok"], event["error"]) == ("reload", True, None)


def test_off_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = EventLog(None)
    log.reload(ok=True)
    assert capsys.readouterr().out == ""
    assert not log.enabled


def test_reopen_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(str(path))
    log.reload(ok=True, error=None)
    path.rename(tmp_path / "events.jsonl.1")  # logrotate moves it, then sends SIGHUP
    log.reopen()
    log.reload(ok=False, error="bad")
    log.close()
    assert [e["ok"] for e in lines(tmp_path / "events.jsonl.1")] == [True]
    assert [e["ok"] for e in lines(path)] == [False]


def test_write_errors_never_raise_and_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog("/dev/full")  # every write fails with ENOSPC
    for _ in range(3):
        log.reload(ok=True)
    assert log.dropped == 3
    log.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "writing the event log /dev/full failed" in errors[0].getMessage()


def test_an_unopenable_file_drops_events_until_reopen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "missing-dir" / "events.jsonl"
    log = EventLog(str(path))
    log.reload(ok=True)
    log.reload(ok=True)
    assert log.dropped == 2
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        f"cannot open the event log {path}: No such file or directory;"
        " events are dropped until it works again (SIGHUP reopens it)"
    ]
    path.parent.mkdir()
    log.reopen()
    log.reload(ok=False, error="x")
    log.close()
    assert [e["ok"] for e in lines(path)] == [False]


# ---- the daemon writes them ------------------------------------------------------------------


def daemon(tmp_path: Path, dry_run: bool = False) -> Daemon:
    config = parse_text(
        f"""
metrics: {{enabled: false}}
control: {{enabled: false}}
state_file: {tmp_path}/state.json
events: {{file: {tmp_path}/events.jsonl}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    check: {{rise: 1, fall: 1}}
    checks: [{{type: tcp, name: port}}]
    real_servers: [{{name: web-1, address: 192.168.1.101, weight: 5}}]
""",
        "test.yaml",
    )
    return Daemon(config, FakeIpvs(), dry_run=dry_run)


def probe(d: Daemon, ok: bool) -> None:
    (key,) = d.book.probes
    detail = "TCP connect 192.168.1.101:80: " + ("connected" if ok else "connection refused")
    d.on_result(key, ProbeResult(ok, Reason.OK if ok else Reason.REFUSED, detail, 0.001))


async def test_daemon_logs_kernel_ops_and_state_changes_with_reasons(tmp_path: Path) -> None:
    d = daemon(tmp_path)
    assert (await d.reconciler.reconcile_once()).ok  # adds the table, weight 0 until a verdict
    probe(d, ok=True)
    assert (await d.reconciler.reconcile_once()).ok  # weight 5
    probe(d, ok=False)
    d.host.events.close()
    events = lines(tmp_path / "events.jsonl")
    ops = [
        (e["op"], e["real_server"], e["weight"], e["ok"])
        for e in events
        if e["event"] == "kernel_op"
    ]
    assert ops == [
        ("add_virtual_server", None, None, True),
        ("add_real_server", "192.168.1.101:80", 0, True),
        ("edit_real_server", "192.168.1.101:80", 5, True),
    ]
    edit = next(e for e in events if e.get("op") == "edit_real_server")
    assert edit["reason"].endswith("web/web-1 up: port: TCP connect 192.168.1.101:80: connected")
    assert edit["dry_run"] is False
    changes = [
        (e["check"], e["from"], e["to"], e["reason"])
        for e in events
        if e["event"] == "state_change"
    ]
    assert changes == [
        ("port", "unknown", "up", "TCP connect 192.168.1.101:80: connected"),
        (None, "unknown", "up", "port: TCP connect 192.168.1.101:80: connected"),
        ("port", "up", "down", "TCP connect 192.168.1.101:80: connection refused"),
        (None, "up", "down", "port: TCP connect 192.168.1.101:80: connection refused"),
    ]
    assert all(
        (e["virtual_server"], e["real_server"]) == ("web", "web-1")
        for e in events
        if e["event"] == "state_change"
    )


async def test_dry_run_kernel_ops_say_so(tmp_path: Path) -> None:
    d = daemon(tmp_path, dry_run=True)
    await d.reconciler.reconcile_once()
    d.host.events.close()
    assert {e["dry_run"] for e in lines(tmp_path / "events.jsonl")} == {True}


async def test_a_drain_that_completes_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A drained real server (drain override, no connection left) is logged once, and again
    only after it left the drained state and came back to it."""
    d = daemon(tmp_path)
    assert (await d.reconciler.reconcile_once()).ok
    probe(d, ok=True)
    d.runtime.set_override("web", "web-1", Override(OverrideKind.DRAIN, "ops"))
    caplog.set_level(logging.INFO, logger="healthd")

    def logged() -> int:
        return sum("drain complete" in r.getMessage() for r in caplog.records)

    assert (await d.reconciler.reconcile_once()).ok
    assert logged() == 1
    assert (await d.reconciler.reconcile_once()).ok
    assert logged() == 1  # still drained: not again
    d.runtime.set_override("web", "web-1", None)
    assert (await d.reconciler.reconcile_once()).ok
    d.runtime.set_override("web", "web-1", Override(OverrideKind.DRAIN, "ops"))
    assert (await d.reconciler.reconcile_once()).ok
    assert logged() == 2
