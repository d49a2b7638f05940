"""Daemon-wide settings of the configuration (everything but the virtual servers).  Pure."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from healthd.config.checks import Layer
from healthd.config.source import Cursor
from healthd.config.types import (
    ControlConfig,
    EventsConfig,
    MetricsConfig,
    NotifyConfig,
    OnStop,
    ReconcileConfig,
    ScriptsConfig,
)

TOP_LEVEL_SETTINGS = frozenset(
    {"metrics", "reconcile", "probes", "control", "state_file", "scripts", "events"}
)
_LISTEN = re.compile(r"^\[?([^\[\]]*?)\]?:(\d+)$")


def parse_settings(top: Layer) -> dict[str, Any]:
    """Keyword arguments for ``Config`` from the top-level mapping."""
    out: dict[str, Any] = {}
    if "metrics" in top:
        out["metrics"] = _metrics(top["metrics"])
    if "reconcile" in top:
        out["reconcile"] = _reconcile(top["reconcile"])
    if "probes" in top:
        probes = (
            top["probes"].mapping(frozenset({"max_concurrent", "workers", "engine_threads"})) or {}
        )
        if "max_concurrent" in probes:
            value = probes["max_concurrent"].integer(1, 100_000)
            if value is not None:
                out["max_concurrent_probes"] = value
        if "workers" in probes:  # probe worker processes (healthd/workers.py, autoworkers.py)
            workers = probes["workers"].integer_or("auto", 0, 64)
            if workers is not None:
                out["probe_workers"] = workers
        if "engine_threads" in probes:  # the C engine's checks in threads of their own
            threads = probes["engine_threads"].integer_or("auto", 0, 64)
            if threads is not None:
                out["probe_engine_threads"] = threads
    if "control" in top:
        out["control"] = _control(top["control"])
    if "state_file" in top:
        path = _absolute(top["state_file"])
        if path:
            out["state_file"] = path
    if "scripts" in top:
        out["scripts"] = _scripts(top["scripts"])
    if "events" in top:
        out["events"] = _events(top["events"])
    return out


def _absolute(cur: Cursor) -> str | None:
    path = cur.string()
    if path is not None and not path.startswith("/"):
        cur.error(f"must be an absolute path, not {path!r}")
        return None
    return path


def _listen(cur: Cursor) -> tuple[str, int] | None:
    listen = cur.string() or ""
    match = _LISTEN.match(listen)
    port = int(match.group(2)) if match else 0
    if not match or not 1 <= port <= 65535:
        cur.error(f"invalid listen address {listen!r} (write HOST:PORT)")
        return None
    return (match.group(1) or "0.0.0.0", port)


CHECK_DURATION = ("per_real_server", "per_virtual_server", "off")


def _metrics(cur: Cursor) -> MetricsConfig:
    fields = cur.mapping(frozenset({"listen", "enabled", "check_duration"})) or {}
    config = MetricsConfig()
    if "check_duration" in fields:
        field = fields["check_duration"]
        if field.scalar() is False:  # YAML reads a bare off as false
            kind: str | None = "off"
        else:
            kind = field.choice(frozenset(CHECK_DURATION), "check_duration granularity")
        config = replace(config, check_duration=kind or config.check_duration)
    if "enabled" in fields:
        config = replace(config, enabled=bool(fields["enabled"].boolean()))
    if "listen" in fields:
        listen = _listen(fields["listen"])
        if listen is not None:
            config = replace(config, host=listen[0], port=listen[1])
    return config


def _reconcile(cur: Cursor) -> ReconcileConfig:
    fields = cur.mapping(frozenset({"interval", "min_interval", "on_stop", "netlink"})) or {}
    config = ReconcileConfig()
    if "netlink" in fields:
        adapter = fields["netlink"].choice(frozenset({"pyroute2", "raw"}), "netlink adapter")
        config = replace(config, netlink=adapter or "pyroute2")
    if "interval" in fields:
        value = fields["interval"].duration(0.1, 3600)
        config = replace(config, interval_s=value or config.interval_s)
    if "min_interval" in fields:
        value = fields["min_interval"].duration(0, 60)
        config = replace(config, min_interval_s=config.min_interval_s if value is None else value)
    if "on_stop" in fields:
        stop = fields["on_stop"].choice(frozenset(m.value for m in OnStop), "on_stop")
        config = replace(config, on_stop=OnStop(stop) if stop else OnStop.KEEP)
    return config


def _control(cur: Cursor) -> ControlConfig:
    fields = cur.mapping(frozenset({"socket", "listen", "token_file", "enabled"})) or {}
    config = ControlConfig()
    if "enabled" in fields:
        config = replace(config, enabled=fields["enabled"].boolean() is not False)
    if "socket" in fields:
        config = replace(config, socket=_absolute(fields["socket"]) or config.socket)
    if "token_file" in fields:
        config = replace(config, token_file=_absolute(fields["token_file"]))
    if "listen" in fields:
        listen = _listen(fields["listen"])
        if listen is not None:
            config = replace(config, listen_host=listen[0], listen_port=listen[1])
            if config.token_file is None:
                fields["listen"].error(
                    "a TCP control listener needs token_file (the bearer token clients send)"
                )
    return config


def _scripts(cur: Cursor) -> ScriptsConfig:
    fields = cur.mapping(frozenset({"user", "insecure"})) or {}
    config = ScriptsConfig()
    if "user" in fields:
        user = fields["user"].string()
        config = replace(config, user=None if user in (None, "root") else user)
    if "insecure" in fields:
        config = replace(config, insecure=bool(fields["insecure"].boolean()))
    return config


def _events(cur: Cursor) -> EventsConfig:
    fields = cur.mapping(frozenset({"file"})) or {}
    if "file" not in fields:
        return EventsConfig()
    path = fields["file"].string()
    if path not in (None, "-") and not str(path).startswith("/"):
        fields["file"].error(f'must be an absolute path or "-" for stdout, not {path!r}')
        return EventsConfig()
    return EventsConfig(file=path)


def parse_notify(cur: Cursor) -> NotifyConfig | None:
    fields = cur.mapping(frozenset({"up", "down", "timeout"}))
    if fields is None:
        return None
    config = NotifyConfig()
    if "up" in fields:
        config = replace(config, up=_argv(fields["up"]))
    if "down" in fields:
        config = replace(config, down=_argv(fields["down"]))
    if "timeout" in fields:
        timeout = fields["timeout"].duration(0.1, 3600)
        if timeout is not None:
            config = replace(config, timeout_s=timeout)
    if not config.up and not config.down:
        cur.error("give up: [...] and/or down: [...] commands")
    return config


def _argv(cur: Cursor) -> tuple[str, ...]:
    argv: list[str] = []
    for index, node in cur.sequence():
        arg = cur.item(node, str(index)).string()
        if arg is not None:
            argv.append(arg)
    if not argv:
        cur.error("must be a non-empty list: [/path/to/program, arg, ...]")
    elif not argv[0].startswith("/"):
        cur.error(f"the program must be an absolute path, not {argv[0]!r}")
    return tuple(argv)
