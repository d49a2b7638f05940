"""The control API and every CLI verb against a running ``healthd run --dry-run`` on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


CONFIG = """
metrics: {{enabled: false}}
control: {{socket: {sock}}}
state_file: {state}
reconcile: {{interval: 300ms}}
defaults: {{check: {{interval: 200ms, timeout: 100ms, rise: 1, fall: 1}}}}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{{type: tcp}}]
    real_servers:
      - {{name: a, address: 127.0.0.1, port: {port_a}, weight: 2}}
      - {{name: b, address: 127.0.0.1, port: {port_b}, weight: 3}}
"""


@dataclass
class Running:
    config: Path
    sock: str
    state: Path
    proc: subprocess.Popen[str]
    ports: tuple[int, int]

    def cli(self, *args: str) -> tuple[int, str, str]:
        return run_cli(*args, "--socket", self.sock)


def run_cli(*args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "healthd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    return done.returncode, done.stdout, done.stderr


def start(tmp_path: Path, ports: tuple[int, int]) -> Running:
    sock = str(tmp_path / "run" / "healthd.sock")
    state = tmp_path / "lib" / "state.json"
    config = tmp_path / "healthd.yaml"
    config.write_text(CONFIG.format(sock=sock, state=state, port_a=ports[0], port_b=ports[1]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthd", "run", "-c", str(config), "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    running = Running(config, sock, state, proc, ports)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if os.path.exists(sock):
            code, out, _ = running.cli("status", "--json")
            if code == 0 and json.loads(out)["daemon"]["ready"]:
                return running
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"daemon never got ready:\n{proc.communicate()[0]}")


def stop(running: Running) -> str:
    running.proc.send_signal(signal.SIGTERM)
    out, _ = running.proc.communicate(timeout=15)
    assert running.proc.returncode == 0, out
    return out


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Running]:
    a, b = listener(), listener()
    running = start(tmp_path, (a.getsockname()[1], b.getsockname()[1]))
    yield running
    if running.proc.poll() is None:
        stop(running)
    a.close()
    b.close()


def rs(running: Running, name: str) -> dict[str, object]:
    code, out, err = running.cli("status", "--json")
    assert code == 0, err
    status = json.loads(out)
    return next(r for r in status["virtual_servers"][0]["real_servers"] if r["name"] == name)


def wait_for(running: Running, name: str, key: str, value: object) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        current = rs(running, name)
        if current[key] == value or time.monotonic() > deadline:
            assert current[key] == value, current
            return current
        time.sleep(0.1)


def test_status_text_and_json(daemon: Running) -> None:
    wait_for(daemon, "a", "kernel_weight", 2)
    code, out, _ = daemon.cli("status")
    assert code == 0
    assert "TCP 10.0.0.1:80 wlc (web, on_failure inhibit)" in out
    line = next(ln for ln in out.splitlines() if f"127.0.0.1:{daemon.ports[0]}" in ln)
    assert " a " in line and "Masq" in line and "2/2" in line and " up " in line
    assert "connected" in line  # why: the last probe's detail
    socket_mode = os.stat(daemon.sock).st_mode & 0o777
    assert socket_mode == 0o600


def test_drain_maint_weight_ready(daemon: Running) -> None:
    wait_for(daemon, "b", "kernel_weight", 3)
    code, out, _ = daemon.cli("drain", "web", "b", "--reason", "deploy 42")
    assert code == 0 and "web/b: drain by root: deploy 42" in out
    b = wait_for(daemon, "b", "kernel_weight", 0)
    assert b["state"] == "drained"  # the dry-run table has no connections
    assert b["override"]["reason"] == "deploy 42"  # type: ignore[index]
    code, out, _ = daemon.cli("weight", "web", "a", "7")
    assert code == 0 and "weight 7 by root" in out
    wait_for(daemon, "a", "kernel_weight", 7)
    code, _, _ = daemon.cli("maint", "web", "a")
    assert code == 0
    assert wait_for(daemon, "a", "kernel_weight", 0)["state"] == "maintenance"
    code, out, _ = daemon.cli("ready", "web", "a")
    assert code == 0 and "back to health-driven control (was maint by root)" in out
    assert wait_for(daemon, "a", "kernel_weight", 2)["state"] == "up"


def test_ttl_returns_the_server_to_normal_control(daemon: Running) -> None:
    wait_for(daemon, "a", "kernel_weight", 2)
    code, _, _ = daemon.cli("maint", "web", "a", "--ttl", "1s")
    assert code == 0
    wait_for(daemon, "a", "kernel_weight", 0)
    back = wait_for(daemon, "a", "kernel_weight", 2)
    assert back["override"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("drain", "nope", "a"), "unknown virtual server 'nope' (known: web)"),
        (("drain", "web", "zz"), "unknown real server 'zz' in virtual server 'web' (known: a, b)"),
        (("weight", "web", "a", "70000"), "weight must be an integer from 0 to 65535"),
        (("maint", "web", "a", "--ttl", "soon"), "invalid --ttl 'soon'"),
    ],
)
def test_errors_are_one_clear_line(daemon: Running, args: tuple[str, ...], message: str) -> None:
    code, out, err = daemon.cli(*args)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_daemon_not_running_and_permission_denied(tmp_path: Path) -> None:
    code, _, err = run_cli("status", "--socket", str(tmp_path / "none.sock"))
    assert code == 1
    assert err.strip() == (
        f"healthd status: healthd is not running (no control socket answers at "
        f"{tmp_path / 'none.sock'})"
    )
    a, b = listener(), listener()
    running = start(tmp_path, (a.getsockname()[1], b.getsockname()[1]))
    try:
        os.chmod(tmp_path, 0o755)
        os.chmod(tmp_path / "run", 0o755)
        done = subprocess.run(
            [sys.executable, "-m", "healthd", "status", "--socket", running.sock],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            user="nobody",
        )
        assert done.returncode == 1
        assert done.stderr.strip() == (
            f"healthd status: permission denied: {running.sock} (the control socket is root-only)"
        )
    finally:
        stop(running)
        a.close()
        b.close()


def test_overrides_survive_a_restart(tmp_path: Path) -> None:
    a, b = listener(), listener()
    ports = (a.getsockname()[1], b.getsockname()[1])
    running = start(tmp_path, ports)
    assert running.cli("drain", "web", "b", "--reason", "rack move", "--ttl", "1h")[0] == 0
    stop(running)
    saved = json.loads(running.state.read_text())
    assert saved["overrides"][0]["kind"] == "drain"
    running = start(tmp_path, ports)
    try:
        b_status = wait_for(running, "b", "kernel_weight", 0)
        assert b_status["override"]["reason"] == "rack move"  # type: ignore[index]
        assert b_status["state"] == "drained"
    finally:
        stop(running)
        a.close()
        b.close()


def test_reload_valid_invalid_and_sighup(daemon: Running) -> None:
    wait_for(daemon, "a", "kernel_weight", 2)
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace("weight: 2}", "weight: 5}"))
    code, out, _ = daemon.cli("reload")
    assert code == 0 and "changed web/a" in out
    wait_for(daemon, "a", "kernel_weight", 5)
    wait_for(daemon, "a", "configured_weight", 5)
    assert rs(daemon, "b")["health"] == "up"  # unchanged: kept its verdict

    daemon.config.write_text(good.replace("port: 80\n", "port: 80\n    bogus: 1\n"))
    code, out, err = daemon.cli("reload")
    assert code == 1
    assert f"{daemon.config}:11: virtual_servers[web].bogus: unknown key" in err
    assert rs(daemon, "a")["configured_weight"] == 5  # the old config keeps running

    daemon.config.write_text(good.replace("weight: 3}", "weight: 4}"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(daemon, "b", "kernel_weight", 4)
    log = stop(daemon)
    assert "received SIGHUP" in log
    assert "reload refused: " in log and "bogus: unknown key" in log
