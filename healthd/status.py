"""``healthd status``: the daemon's view as a JSON-able value, and its text rendering.  Pure."""

from __future__ import annotations

import time
from typing import Any

from healthd.model import Observed, format_endpoint
from healthd.overrides import unexpired
from healthd.plan import wanted_weight
from healthd.runtime import Runtime


def build(
    runtime: Runtime, observed: Observed, now: float, daemon: dict[str, Any]
) -> dict[str, Any]:
    active = unexpired(runtime.overrides, now)
    states = runtime.states(observed, now)
    status = runtime.book.status()
    out: list[dict[str, Any]] = []
    for vs in runtime.config.virtual_servers:
        have = observed.get(vs.key)
        want = runtime.last_desired.get(vs.key)
        real_servers = []
        for rs in vs.real_servers:
            rs_id = (vs.name, rs.name)
            seen = have.real_servers.get(rs.key) if have is not None else None
            desired = want.real_servers.get(rs.key) if want is not None else None
            checks = []
            for name, key in runtime.book.checks_of[rs_id]:
                last = runtime.book.last_result(key)
                checks.append(
                    {
                        "name": name,
                        "state": runtime.book.states[key].health.value,
                        "detail": last.detail if last else None,
                        "duration_s": round(last.duration_s, 6) if last else None,
                    }
                )
            override = active.get(rs_id)
            real_servers.append(
                {
                    "name": rs.name,
                    "address": rs.address,
                    "port": rs.port,
                    "forwarding": (seen.spec.forwarding if seen else rs.forwarding).ipvsadm_name,
                    "state": states[rs_id],
                    "health": status[rs_id].health.value,
                    "why": status[rs_id].why,
                    "since": runtime.since.get(rs_id),
                    "configured_weight": rs.weight,
                    "desired_weight": (
                        wanted_weight(desired, seen.spec if seen else None) if desired else None
                    ),
                    "kernel_weight": seen.spec.weight if seen else None,
                    "active_connections": seen.active_connections if seen else None,
                    "inactive_connections": seen.inactive_connections if seen else None,
                    "checks": checks,
                    "override": (
                        {**override.to_json(), "text": override.describe(now)} if override else None
                    ),
                }
            )
        out.append(
            {
                "name": vs.name,
                "key": str(vs.key),
                "scheduler": vs.spec.scheduler,
                "on_failure": vs.on_failure.value,
                "in_kernel": have is not None,
                "real_servers": real_servers,
            }
        )
    return {"daemon": daemon, "virtual_servers": out}


def _since(value: float | None, now: float) -> str:
    if value is None:
        return "-"
    age = max(0, int(now - value))
    if age < 120:
        return f"{age}s"
    if age < 7200:
        return f"{age // 60}m"
    return f"{age // 3600}h"


def render(status: dict[str, Any], now: float | None = None) -> str:
    """Text like ``ipvsadm -Ln``, with health, why, weights and overrides."""
    now = time.time() if now is None else now
    lines = []
    daemon = status["daemon"]
    mode = " (dry-run)" if daemon.get("dry_run") else ""
    ready = "ready" if daemon.get("ready") else "NOT READY"
    lines.append(
        f"healthd {daemon.get('version', '?')}{mode}, {ready}, config {daemon.get('config')}"
    )
    header = (
        f"  {'-> RemoteAddress:Port':<28} {'Name':<12} {'Fwd':<6} {'Weight':>11} {'State':<12} "
        f"{'Since':>5} {'Probe':>8} {'Act':>4} {'Inact':>5}  Why"
    )
    for vs in status["virtual_servers"]:
        missing = "" if vs["in_kernel"] else "  [not in the kernel]"
        lines.append(
            f"{vs['key']} {vs['scheduler']} ({vs['name']}, on_failure {vs['on_failure']}){missing}"
        )
        lines.append(header)
        for rs in vs["real_servers"]:
            weight = f"{_num(rs['kernel_weight'])}/{rs['configured_weight']}"
            durations = [c["duration_s"] for c in rs["checks"] if c["duration_s"] is not None]
            probe = f"{max(durations) * 1000:.1f}ms" if durations else "-"
            why = rs["why"]
            if rs["override"]:
                why = f"override: {rs['override']['text']}; {why}"
            lines.append(
                f"  -> {format_endpoint(rs['address'], rs['port']):<25} {rs['name']:<12} "
                f"{rs['forwarding']:<6} {weight:>11} {rs['state']:<12} "
                f"{_since(rs['since'], now):>5} {probe:>8} {_num(rs['active_connections']):>4} "
                f"{_num(rs['inactive_connections']):>5}  {why}"
            )
    return "\n".join(lines)


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)
