"""The health book: shared probes, subscribers, and per-real-server verdicts."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from healthd import state
from healthd.checkspec import ProbeResult, Reason, ScriptCheck, TcpCheck
from healthd.config import Config, parse_text
from healthd.model import Health
from healthd.state import HealthBook, ProbeKey, Subscriber

TWO_VIRTUAL_SERVERS = """\
defaults:
  checks: [{type: tcp}, {type: script, command: [/usr/local/bin/check-app]}]
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    real_servers:
      - {name: a, address: 192.168.1.1}
  - name: web-alt
    address: 10.0.0.2
    port: 80
    real_servers:
      - {name: a2, address: 192.168.1.1}
"""


def parse(text: str) -> Config:
    return parse_text(text, "state.yaml")


def ok(detail: str = "connected") -> ProbeResult:
    return ProbeResult(True, Reason.OK, detail, 0.001)


def fail(detail: str, reason: Reason = Reason.REFUSED) -> ProbeResult:
    return ProbeResult(False, reason, detail, 0.001)


def keys_of(book: HealthBook, kind: type) -> list[ProbeKey]:
    return [k for k in book.probes if isinstance(k.spec, kind)]


def test_identical_tcp_checks_are_probed_once_for_two_virtual_servers() -> None:
    book = HealthBook.from_config(parse(TWO_VIRTUAL_SERVERS))
    (tcp,) = keys_of(book, TcpCheck)
    assert (tcp.target.address, tcp.target.port) == ("192.168.1.1", 80)
    assert sorted(book.probes[tcp], key=str) == [
        Subscriber("web", "a", "tcp"),
        Subscriber("web-alt", "a2", "tcp"),
    ]
    assert tcp.describe() == "TCP connect 192.168.1.1:80"


def test_script_checks_are_not_shared_across_virtual_servers() -> None:
    book = HealthBook.from_config(parse(TWO_VIRTUAL_SERVERS))
    scripts = keys_of(book, ScriptCheck)
    assert len(scripts) == 2
    # Each script run sees its own virtual server.
    assert {(k.target.vs_address, k.target.vs_port) for k in scripts} == {
        ("10.0.0.1", 80),
        ("10.0.0.2", 80),
    }
    subscribers = [s for k in scripts for s in book.probes[k]]
    assert sorted(subscribers, key=str) == [
        Subscriber("web", "a", "script"),
        Subscriber("web-alt", "a2", "script"),
    ]
    assert all(len(book.probes[k]) == 1 for k in scripts)
    assert len(book.probes) == 3


def test_different_timing_is_not_shared() -> None:
    text = TWO_VIRTUAL_SERVERS.replace(
        "  - name: web-alt\n", "  - name: web-alt\n    check: {rise: 5}\n"
    )
    book = HealthBook.from_config(parse(text))
    assert len(keys_of(book, TcpCheck)) == 2


def test_a_shared_probe_result_changes_every_subscriber() -> None:
    book = HealthBook.from_config(parse(TWO_VIRTUAL_SERVERS))
    (tcp,) = keys_of(book, TcpCheck)
    # Make the scripts pass first so the tcp check alone decides.
    for key in keys_of(book, ScriptCheck):
        book.record(key, ok("exit 0"))

    outcome = book.record(tcp, fail("TCP connect 192.168.1.1:80: connection refused"))

    assert outcome.check_change is not None
    assert outcome.check_change.key == tcp
    assert (outcome.check_change.before, outcome.check_change.after) == (
        Health.UNKNOWN,
        Health.DOWN,
    )
    changed = {c.real_server: c for c in outcome.real_server_changes}
    assert set(changed) == {("web", "a"), ("web-alt", "a2")}
    for change in changed.values():
        assert change.after.health is Health.DOWN
        assert "connection refused" in change.after.why
    assert book.status()[("web", "a")].health is Health.DOWN
    assert book.status()[("web-alt", "a2")].health is Health.DOWN


def test_a_result_that_changes_nothing_reports_nothing() -> None:
    book = HealthBook.from_config(parse(TWO_VIRTUAL_SERVERS))
    (tcp,) = keys_of(book, TcpCheck)
    book.record(tcp, ok())  # UNKNOWN -> UP: a change
    outcome = book.record(tcp, ok())  # UP -> UP
    assert outcome.check_change is None
    assert outcome.real_server_changes == ()


ONE_REAL_SERVER_TWO_CHECKS = """\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    check: {rise: 1, fall: 1}
    checks: [{type: http, path: /healthz, name: app}, {type: tcp, port: 22, name: ssh}]
    real_servers:
      - {name: a, address: 192.168.1.1}
      - {name: static, address: 192.168.1.2, checks: []}
"""


def test_all_checks_must_pass() -> None:
    book = HealthBook.from_config(parse(ONE_REAL_SERVER_TWO_CHECKS))
    (app, ssh) = (key for _, key in book.checks_of[("web", "a")])
    assert book.status()[("web", "a")].health is Health.UNKNOWN

    book.record(app, ok("HTTP GET 192.168.1.1:80/healthz: status 200"))
    # One check up, one without a verdict: still no verdict for the real server.
    assert book.status()[("web", "a")].health is Health.UNKNOWN

    outcome = book.record(ssh, fail("TCP connect 192.168.1.1:22: connection refused"))
    (change,) = outcome.real_server_changes
    assert change.real_server == ("web", "a")
    assert (change.before.health, change.after.health) == (Health.UNKNOWN, Health.DOWN)
    status = book.status()[("web", "a")]
    assert status.health is Health.DOWN
    assert "ssh" in status.why
    assert "TCP connect 192.168.1.1:22: connection refused" in status.why

    outcome = book.record(ssh, ok("TCP connect 192.168.1.1:22: connected"))
    (change,) = outcome.real_server_changes
    assert change.after.health is Health.UP
    assert book.status()[("web", "a")].health is Health.UP


def test_the_failing_check_is_named_even_when_it_is_not_the_first() -> None:
    book = HealthBook.from_config(parse(ONE_REAL_SERVER_TWO_CHECKS))
    (app, ssh) = (key for _, key in book.checks_of[("web", "a")])
    book.record(ssh, ok("TCP connect 192.168.1.1:22: connected"))
    book.record(app, fail("HTTP GET 192.168.1.1:80/healthz: status 503", Reason.STATUS))
    status = book.status()[("web", "a")]
    assert status.health is Health.DOWN
    assert "app" in status.why
    assert "status 503" in status.why
    assert "ssh" not in status.why


def test_second_check_going_down_changes_the_check_but_not_the_real_server() -> None:
    book = HealthBook.from_config(parse(ONE_REAL_SERVER_TWO_CHECKS))
    (app, ssh) = (key for _, key in book.checks_of[("web", "a")])
    book.record(app, fail("HTTP GET 192.168.1.1:80/healthz: status 503", Reason.STATUS))
    outcome = book.record(ssh, fail("TCP connect 192.168.1.1:22: timed out", Reason.TIMEOUT))
    assert outcome.check_change is not None
    assert outcome.check_change.after is Health.DOWN
    assert outcome.real_server_changes == ()
    assert book.status()[("web", "a")].health is Health.DOWN


def test_a_real_server_without_checks_is_up() -> None:
    book = HealthBook.from_config(parse(ONE_REAL_SERVER_TWO_CHECKS))
    assert book.checks_of[("web", "static")] == ()
    status = book.status()[("web", "static")]
    assert status.health is Health.UP
    assert status.why
    # Its neighbour's results never touch it.
    (app, _) = (key for _, key in book.checks_of[("web", "a")])
    outcome = book.record(app, fail("HTTP GET 192.168.1.1:80/healthz: status 503"))
    assert all(c.real_server != ("web", "static") for c in outcome.real_server_changes)
    assert book.status()[("web", "static")].health is Health.UP


def test_initial_state_down_is_the_starting_verdict() -> None:
    text = ONE_REAL_SERVER_TWO_CHECKS.replace("{rise: 1, fall: 1}", "{initial_state: down}")
    book = HealthBook.from_config(parse(text))
    status = book.status()[("web", "a")]
    assert status.health is Health.DOWN
    assert "initial_state down" in status.why


def test_every_configured_real_server_has_a_status() -> None:
    config = parse(TWO_VIRTUAL_SERVERS)
    book = HealthBook.from_config(config)
    assert set(book.status()) == {
        (vs.name, rs.name) for vs in config.virtual_servers for rs in vs.real_servers
    }
    assert all(s.health is Health.UNKNOWN for s in book.status().values())


def test_a_probe_key_sent_to_another_process_is_hashed_there() -> None:
    # The worker processes receive pickled keys and look them up: the hash must be that
    # process's own (string hashes are randomised per process), so it is not pickled.
    code = (
        "import pickle, sys\n"
        "key = pickle.loads(sys.stdin.buffer.read())\n"
        "print(hash(key) == hash((key.spec, key.target, key.timing)), key in {key: 1})\n"
    )
    key = keys_of(HealthBook.from_config(parse(TWO_VIRTUAL_SERVERS)), TcpCheck)[0]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(key), capture_output=True, env=env
    )
    assert out.stdout.decode().split() == ["True", "True"], out.stderr
    assert pickle.loads(pickle.dumps(key)) == key


def test_last_result_is_the_latest_with_its_own_duration() -> None:
    book = HealthBook.from_config(parse(TWO_VIRTUAL_SERVERS))
    (tcp,) = keys_of(book, TcpCheck)
    assert book.last_result(tcp) is None
    book.record(tcp, ProbeResult(True, Reason.OK, "connected", 0.001))
    book.record(tcp, ProbeResult(True, Reason.OK, "connected", 0.25))
    last = book.last_result(tcp)
    assert last == ProbeResult(True, Reason.OK, "connected", 0.25)
    book.record(tcp, fail("connection refused"))
    assert book.last_result(tcp) == fail("connection refused")
    # a reload that keeps the probe keeps its latest result
    again = book.carry_over(parse(TWO_VIRTUAL_SERVERS))
    assert again.last_result(tcp) == fail("connection refused")


def test_a_result_says_the_same_only_if_every_field_but_the_duration_is_equal() -> None:
    # The book keeps a repeated result once; a field this comparison forgot would hide a change.
    import dataclasses

    base = ProbeResult(True, Reason.OK, "connected", 0.001, http_status=200, tls_not_after=1.0)
    assert base.says_the_same_as(dataclasses.replace(base, duration_s=0.5))
    other = {"ok": False, "reason": Reason.REFUSED, "detail": "x", "http_status": 503}
    for f in dataclasses.fields(ProbeResult):
        if f.name == "duration_s":
            continue
        changed = dataclasses.replace(base, **{f.name: other.get(f.name, 2.0)})
        assert not base.says_the_same_as(changed), f.name


def test_real_servers_with_the_same_verdict_and_reason_share_one_status() -> None:
    text = """\
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: tcp}]
    real_servers:
      - {name: a, address: 192.168.1.1}
      - {name: b, address: 192.168.1.2}
      - {name: c, address: 192.168.1.3}
"""
    book = HealthBook.from_config(parse(text))
    for key in book.probes:
        book.record(key, ok())
    a, b, c = (book.status()[("web", n)] for n in "abc")
    assert a.health is Health.UP and a.why == "tcp: connected"
    assert a is b is c  # thousands of up real servers hold one object, not one each
    (key_c,) = (k for k in book.probes if k.target.address == "192.168.1.3")
    book.record(key_c, fail("connection refused"))
    book.record(key_c, fail("connection refused"))
    book.record(key_c, fail("connection refused"))
    down = book.status()[("web", "c")]
    assert down.health is Health.DOWN and down.why == "tcp: connection refused"
    assert book.status()[("web", "a")] is a


def test_the_book_tells_which_real_servers_changed_since_a_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    book = HealthBook.from_config(parse(ONE_REAL_SERVER_TWO_CHECKS))
    (app, ssh) = (key for _, key in book.checks_of[("web", "a")])
    start = book.version
    assert book.changed_since(start) == []
    book.record(ssh, ok("TCP connect 192.168.1.1:22: connected"))
    assert book.changed_since(start) == []  # a check's verdict; the real server's is the same
    book.record(app, ok("HTTP GET 192.168.1.1:80/healthz: status 200"))
    assert book.changed_since(start) == [("web", "a")]
    middle = book.version
    book.record(app, fail("HTTP GET 192.168.1.1:80/healthz: status 503", Reason.STATUS))
    assert book.changed_since(middle) == [("web", "a")]
    assert book.changed_since(start) == [("web", "a")]  # each real server once
    assert book.changed_since(book.version) == []
    assert book.changed_since(book.version + 1) is None  # not one of its versions
    # a long history: what is older than the journal keeps cannot be told
    monkeypatch.setattr(state, "JOURNAL_KEPT", 4)
    for i in range(6):
        book.record(app, ok(f"status 200 ({i})") if i % 2 == 0 else fail(f"status 503 ({i})"))
    assert book.changed_since(start) is None
    assert book.changed_since(book.version - 1) == [("web", "a")]
