"""Config generators: the same N real servers for healthd and for keepalived, equivalent checks.

Equivalence (docs/benchmarks.md, "Settings"): keepalived's delay_loop 1, connect_timeout 1,
retry 1, delay_before_retry 1, inhibit_on_failure is healthd's interval 1s, fall 2 (one failure
plus one retry), rise 1 (keepalived puts a real server back after one good check), on_failure
inhibit, and initial_state up (keepalived without ``alpha`` presumes a real server up at
start).  healthd uses its raw generic-netlink adapter (``reconcile.netlink: raw``).  healthd
wants timeout < interval, so its timeout is 0.9 s; a killed backend answers
with an RST at once, so the timeout never comes into play in these runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VIP = "10.99.0.1"
VPORT = 80


def split(base: int, n: int, per_vs: int | None) -> list[tuple[int, range]]:
    """The virtual servers' ports and each one's real servers' ports: all N behind VIP:VPORT
    (``per_vs`` None), or ``per_vs`` to each of VIP:VPORT, VIP:VPORT+1, ..."""
    size = per_vs or n
    return [(VPORT + i, range(base + i * size, min(base + n, base + (i + 1) * size)))
            for i in range((n + size - 1) // size)]  # fmt: skip


def vport_of(port: int, base: int, per_vs: int | None) -> int:
    """The virtual server's port of the real server on ``port`` (as ``split`` lays them out)."""
    return VPORT if per_vs is None else VPORT + (port - base) // per_vs


def healthd_config(
    path: Path,
    *,
    addr: str,
    base: int,
    n: int,
    check: str,
    workdir: Path,
    interval_s: float = 1.0,
    timeout_s: float = 0.9,
    fall: int = 2,
    rise: int = 1,
    metrics_port: int = 9540,
    max_concurrent: int = 1024,
    workers: int | str | None = None,  # None: healthd's default (auto)
    engine_threads: int = 0,  # probes.engine_threads
    reconcile_interval: str = "5s",
    initial_state: str = "up",
    netlink: str = "raw",
    check_duration: str | None = None,
    events_file: Path | None = None,
    tcp_close: str | None = None,  # None: healthd's default (graceful)
    per_vs: int | None = None,  # real servers per virtual server (None: all in one)
) -> Path:
    close = f", close: {tcp_close}" if tcp_close else ""
    check_line = f"{{type: tcp{close}}}" if check == "tcp" else "{type: http, path: /}"
    probes = f"  max_concurrent: {max_concurrent}\n"
    if workers is not None:
        probes += f"  workers: {workers}\n"
    if engine_threads:
        probes += f"  engine_threads: {engine_threads}\n"
    duration = f", check_duration: {check_duration}" if check_duration else ""
    lines = [
        f'metrics: {{listen: "127.0.0.1:{metrics_port}"{duration}}}',
        f"reconcile: {{interval: {reconcile_interval}, on_stop: keep, netlink: {netlink}}}",
        "probes:",
        probes.rstrip("\n"),
        f"control: {{socket: {workdir}/healthd.sock}}",
        f"state_file: {workdir}/state.json",
        *([f"events: {{file: {events_file}}}"] if events_file else []),
        "defaults:",
        f"  check: {{interval: {interval_s}s, timeout: {timeout_s}s, rise: {rise}, fall: {fall},"
        f" initial_state: {initial_state}}}",
        "virtual_servers:",
    ]
    for vport, ports in split(base, n, per_vs):
        lines += [
            f"  - name: bench{'' if vport == VPORT else vport}",
            f"    address: {VIP}",
            f"    port: {vport}",
            "    scheduler: wrr",
            "    forwarding: nat",
            "    on_failure: inhibit",
            f"    checks: [{check_line}]",
            "    real_servers:",
        ]
        lines += [f"      - {{name: rs{p}, address: {addr}, port: {p}, weight: 1}}" for p in ports]
    path.write_text("\n".join(lines) + "\n")
    return path


def keepalived_config(
    path: Path,
    *,
    addr: str,
    base: int,
    n: int,
    check: str,
    delay_loop: int = 1,
    per_vs: int | None = None,
) -> Path:
    if check == "tcp":
        checker = "TCP_CHECK { connect_timeout 1 retry 1 delay_before_retry 1 }"
    else:
        checker = (
            "HTTP_GET { url { path / status_code 200 } connect_timeout 1 retry 1 "
            "delay_before_retry 1 }"
        )
    lines = ["global_defs {", "  router_id healthd-bench", "}"]
    for vport, ports in split(base, n, per_vs):
        lines += [
            f"virtual_server {VIP} {vport} {{",
            f"  delay_loop {delay_loop}",
            "  lvs_sched wrr",
            "  lvs_method NAT",
            "  protocol TCP",
        ]
        lines += [
            f"  real_server {addr} {p} {{ weight 1\n    inhibit_on_failure\n    {checker}\n  }}"
            for p in ports
        ]
        lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    return path


def dry_run_daemon(workdir: Path, *, n: int, check: str, **settings: Any) -> Any:
    """healthd's ``Daemon`` (dry-run table, nothing started) on a config of ``n`` real servers
    on 127.0.0.1 from port 10000 (the host micro-benchmarks; healthd imported here only)."""
    from healthd import config as config_mod
    from healthd.daemon import Daemon
    from healthd.ipvs.dryrun import DryRunIpvs

    path = healthd_config(
        workdir / "healthd.yaml",
        addr="127.0.0.1",
        base=10000,
        n=n,
        check=check,
        workdir=workdir,
        **settings,
    )
    return Daemon(config_mod.load(str(path)), DryRunIpvs(), dry_run=True)
