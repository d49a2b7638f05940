"""The configuration schema: YAML nodes to a validated ``Config``.  Pure: no file or clock access.

Inheritance: ``defaults`` -> virtual server -> real server -> check.  ``check:`` holds timing
(interval, timeout, rise, fall, initial_state); ``checks:`` is a list of checks, and a list at an
inner level replaces the outer one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from healthd.checkspec import CheckSpec, CheckTiming, HttpCheck, ScriptCheck, TcpCheck
from healthd.config.source import ConfigError, Cursor, Issues, compose
from healthd.config.types import (
    SCHEDULERS,
    CheckConfig,
    Config,
    MetricsConfig,
    OnStop,
    RealServerConfig,
    ReconcileConfig,
    VirtualServerConfig,
)
from healthd.model import (
    Forwarding,
    Health,
    OnFailure,
    Protocol,
    VirtualServerKey,
    VirtualServerSpec,
    address_family,
)

_TIMING_KEYS = frozenset({"interval", "timeout", "rise", "fall", "initial_state"})
_INHERITED = frozenset({"check", "checks", "forwarding", "scheduler", "protocol", "weight"})
_TOP_KEYS = frozenset({"metrics", "defaults", "virtual_servers", "reconcile", "probes"})
_VS_KEYS = _INHERITED | {
    "name",
    "address",
    "port",
    "fwmark",
    "family",
    "on_failure",
    "persistence_timeout",
    "real_servers",
}
_RS_KEYS = frozenset({"name", "address", "port", "weight", "forwarding", "check", "checks"})
_CHECK_COMMON = _TIMING_KEYS | {"type", "name"}
_CHECK_KEYS = {
    "tcp": _CHECK_COMMON | {"port"},
    "http": _CHECK_COMMON
    | {
        "path",
        "method",
        "host",
        "expect_status",
        "expect_body",
        "https",
        "verify",
        "ca_file",
        "sni",
        "port",
        "max_body_bytes",
        "headers",
    },
    "script": _CHECK_COMMON | {"command", "max_output_bytes"},
}
_STATUS = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")

Layer = dict[str, Cursor]


@dataclass(frozen=True)
class _ParsedCheck:
    name: str | None
    spec: CheckSpec
    timing: dict[str, Any]
    cursor: Cursor


def parse_text(text: str, file: str) -> Config:
    """Validate a YAML document; raises ``ConfigError`` listing every issue found."""
    issues = Issues(file)
    root = compose(text, issues)
    config = None
    if root is not None:
        config = _parse_root(Cursor(root, "", issues), file)
    elif not issues.items:
        issues.add(None, "", "the file is empty")
    if issues.items or config is None:
        unique = list(dict.fromkeys(issues.items))
        unique.sort(key=lambda i: i.line)
        raise ConfigError(unique)
    return config


def _parse_root(cur: Cursor, file: str) -> Config | None:
    top = cur.mapping(_TOP_KEYS)
    if top is None:
        return None
    metrics = _metrics(top["metrics"]) if "metrics" in top else MetricsConfig()
    reconcile = _reconcile(top["reconcile"]) if "reconcile" in top else ReconcileConfig()
    max_probes = 1024
    if "probes" in top:
        probes = top["probes"].mapping(frozenset({"max_concurrent"})) or {}
        if "max_concurrent" in probes:
            max_probes = probes["max_concurrent"].integer(1, 100_000) or max_probes
    defaults: Layer = {}
    if "defaults" in top:
        defaults = top["defaults"].mapping(_INHERITED) or {}
    outer = _Layers.start(defaults)
    virtual_servers: list[VirtualServerConfig] = []
    if "virtual_servers" not in top:
        cur.error("virtual_servers is missing: describe at least one virtual server")
    else:
        vs_cur = top["virtual_servers"]
        where: list[Cursor] = []
        for index, node in vs_cur.sequence():
            vs = _virtual_server(vs_cur, index, node, outer)
            if vs is not None:
                virtual_servers.append(vs)
                where.append(vs_cur.item(node, vs.name))
        if isinstance(vs_cur.node, SequenceNode) and not vs_cur.node.value:
            vs_cur.error("describe at least one virtual server")
        pairs = list(zip(where, virtual_servers, strict=True))
        _unique([(c, v.name, v.name) for c, v in pairs], "name")
        _unique([(c, v.name, str(v.key)) for c, v in pairs], "address")
    return Config(
        path=file,
        virtual_servers=tuple(virtual_servers),
        metrics=metrics,
        reconcile=reconcile,
        max_concurrent_probes=max_probes,
    )


def _unique(items: list[tuple[Cursor, str, str]], what: str) -> None:
    """Report items whose key repeats an earlier one's: (cursor, name, key) triples."""
    seen: dict[str, str] = {}
    for cur, name, value in items:
        if value in seen:
            message = f"duplicate {what} {value!r}"
            if what != "name":
                message += f" (also used by {seen[value]!r})"
            cur.error(message)
        else:
            seen[value] = name


class _Layers:
    """Inherited settings, parsed once per level (so an error is reported once)."""

    def __init__(
        self, values: dict[str, Any], timing: dict[str, Any], checks: list[_ParsedCheck] | None
    ) -> None:
        self.values = values
        self.timing = timing
        self.checks = checks

    @classmethod
    def start(cls, layer: Layer) -> _Layers:
        return cls({}, {}, None).push(layer)

    def push(self, layer: Layer) -> _Layers:
        values = dict(self.values)
        if "forwarding" in layer:
            values["forwarding"] = layer["forwarding"].choice(_enum(Forwarding), "forwarding")
        if "scheduler" in layer:
            values["scheduler"] = layer["scheduler"].choice(SCHEDULERS, "scheduler")
        if "protocol" in layer:
            values["protocol"] = layer["protocol"].choice(_enum(Protocol), "protocol")
        if "weight" in layer:
            values["weight"] = layer["weight"].integer(0, 65535)
        timing = dict(self.timing)
        if "check" in layer:
            timing.update(_timing_fields(layer["check"].mapping(_TIMING_KEYS) or {}))
        checks = self.checks
        if "checks" in layer:
            checks = _checks(layer["checks"])
        return _Layers(values, timing, checks)


def _enum(
    cls: type[Forwarding] | type[Protocol] | type[OnFailure] | type[OnStop],
) -> frozenset[str]:
    return frozenset(m.value for m in cls)


def _timing_fields(layer: Layer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "interval" in layer:
        out["interval_s"] = (layer["interval"].duration(0.05, 3600), layer["interval"])
    if "timeout" in layer:
        out["timeout_s"] = (layer["timeout"].duration(0.01, 3600), layer["timeout"])
    if "rise" in layer:
        out["rise"] = (layer["rise"].integer(1, 100), layer["rise"])
    if "fall" in layer:
        out["fall"] = (layer["fall"].integer(1, 100), layer["fall"])
    if "initial_state" in layer:
        state = layer["initial_state"].choice(_enum_health(), "initial_state")
        out["initial"] = (Health(state) if state else None, layer["initial_state"])
    return out


def _enum_health() -> frozenset[str]:
    return frozenset(h.value for h in Health)


def _resolve_timing(timing: dict[str, Any], where: Cursor) -> CheckTiming:
    fields = {k: v for k, (v, _) in timing.items() if v is not None}
    result = replace(CheckTiming(), **fields)
    if result.timeout_s >= result.interval_s:
        _, node = timing.get("timeout_s", timing.get("interval_s", (None, where)))
        node.error(
            f"timeout ({result.timeout_s:g}s) must be shorter than"
            f" interval ({result.interval_s:g}s)"
        )
    return result


def _checks(cur: Cursor) -> list[_ParsedCheck]:
    parsed: list[_ParsedCheck] = []
    for index, node in cur.sequence():
        check = _check(cur.item(node, str(index)))
        if check is not None:
            parsed.append(check)
    return parsed


def _check(cur: Cursor) -> _ParsedCheck | None:
    if not isinstance(cur.node, MappingNode):
        cur.error("must be a mapping with a type: tcp, http or script")
        return None
    kinds = frozenset(_CHECK_KEYS)
    type_node = next((v for k, v in cur.node.value if getattr(k, "value", None) == "type"), None)
    if type_node is None:
        cur.error("type is missing (tcp, http or script)")
        return None
    kind = cur.child(type_node, "type").choice(kinds, "check type")
    if kind is None:
        return None
    fields = cur.mapping(_CHECK_KEYS[kind])
    if fields is None:
        return None
    name = fields["name"].string() if "name" in fields else None
    timing = _timing_fields({k: v for k, v in fields.items() if k in _TIMING_KEYS})
    spec: CheckSpec | None
    if kind == "tcp":
        spec = TcpCheck(port=fields["port"].port() if "port" in fields else None)
    elif kind == "http":
        spec = _http(fields)
    else:
        spec = _script(cur, fields)
    return None if spec is None else _ParsedCheck(name, spec, timing, cur)


def _http(f: Layer) -> HttpCheck | None:
    spec = HttpCheck()
    if "path" in f:
        path = f["path"].string()
        if path is not None and not path.startswith("/"):
            f["path"].error("must start with /")
        elif path is not None:
            spec = replace(spec, path=path)
    if "method" in f:
        method = f["method"].choice(frozenset({"GET", "HEAD"}), "method")
        spec = replace(spec, method=method or "GET")
    if "host" in f:
        spec = replace(spec, host=f["host"].string())
    if "expect_status" in f:
        ranges = _status_ranges(f["expect_status"])
        if ranges:
            spec = replace(spec, expect_status=ranges)
        elif (
            isinstance(f["expect_status"].node, SequenceNode) and not f["expect_status"].node.value
        ):
            f["expect_status"].error("must list at least one status or range")
    if "expect_body" in f:
        pattern = f["expect_body"].string()
        try:
            re.compile(pattern or "")
            spec = replace(spec, expect_body=pattern)
        except re.error as exc:
            f["expect_body"].error(f"invalid regular expression: {exc}")
    if "https" in f:
        https = f["https"].boolean()
        spec = replace(spec, https=bool(https))
    if "verify" in f:
        verify = f["verify"].boolean()
        spec = replace(spec, verify=verify is not False)
    if "ca_file" in f:
        spec = replace(spec, ca_file=f["ca_file"].string())
    if "sni" in f:
        spec = replace(spec, sni=f["sni"].string())
    if "ca_file" in f and spec.ca_file and not spec.ca_file.startswith("/"):
        f["ca_file"].error("must be an absolute path")
    if "port" in f:
        spec = replace(spec, port=f["port"].port())
    if "max_body_bytes" in f:
        spec = replace(spec, max_body_bytes=f["max_body_bytes"].integer(0, 16 << 20) or 0)
    if "headers" in f:
        spec = replace(spec, headers=_headers(f["headers"]))
    return spec


def _status_ranges(cur: Cursor) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for index, node in cur.sequence():
        item = cur.item(node, str(index))
        raw = item.scalar()
        match = _STATUS.match(str(raw)) if isinstance(raw, int | str) else None
        low = int(match.group(1)) if match else 0
        high = int(match.group(2) or low) if match else 0
        if not match or not 100 <= low <= high <= 599:
            item.error(f'invalid status {raw!r} (write 200 or a range like "200-299")')
            continue
        ranges.append((low, high))
    return tuple(ranges)


def _headers(cur: Cursor) -> tuple[tuple[str, str], ...]:
    node = cur.node
    if not isinstance(node, MappingNode):
        cur.error("must be a mapping of header name to value")
        return ()
    out = []
    for key_node, value_node in node.value:
        value = cur.child(value_node, str(key_node.value)).string()
        if value is not None:
            out.append((str(key_node.value), value))
    return tuple(out)


def _script(cur: Cursor, f: Layer) -> ScriptCheck | None:
    if "command" not in f:
        cur.error("command is missing (a list: [/path/to/program, arg, ...])")
        return None
    argv: list[str] = []
    command = f["command"]
    for index, node in command.sequence():
        arg = command.item(node, str(index)).string()
        if arg is not None:
            argv.append(arg)
    if not argv:
        command.error("must be a non-empty list: [/path/to/program, arg, ...]")
        return None
    if not argv[0].startswith("/"):
        command.error(f"the program must be an absolute path, not {argv[0]!r}")
    max_output = 4096
    if "max_output_bytes" in f:
        max_output = f["max_output_bytes"].integer(0, 1 << 20) or 0
    return ScriptCheck(command=tuple(argv), max_output_bytes=max_output)


def _label(node: Node, index: int) -> str:
    """How an item is named in error paths: its name when it has one, else its index."""
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if getattr(key, "value", None) == "name" and isinstance(value, ScalarNode):
                return str(value.value) or str(index)
    return str(index)


def _name(cur: Cursor, fields: Layer, index: int) -> str:
    if "name" in fields:
        name = fields["name"].string()
        if name:
            return name
    else:
        cur.error("name is missing")
    return str(index)


def _virtual_server(
    parent: Cursor, index: int, node: Any, outer: _Layers
) -> VirtualServerConfig | None:
    cur = parent.item(node, _label(node, index))
    fields = cur.mapping(_VS_KEYS)
    if fields is None:
        return None
    name = _name(cur, fields, index)
    layers = outer.push(fields)
    key = _vs_key(cur, fields, layers)
    scheduler = layers.values.get("scheduler") or "wlc"
    persistence = 0
    if "persistence_timeout" in fields:
        persistence = int(fields["persistence_timeout"].duration(1, 86400 * 31) or 0)
    on_failure = OnFailure.INHIBIT
    if "on_failure" in fields:
        on_failure = OnFailure(
            fields["on_failure"].choice(_enum(OnFailure), "on_failure") or "inhibit"
        )
    real_servers: list[RealServerConfig] = []
    if "real_servers" not in fields:
        cur.error("real_servers is missing")
    else:
        rs_cur = fields["real_servers"]
        where: list[Cursor] = []
        for rs_index, rs_node in rs_cur.sequence():
            rs = _real_server(rs_cur, rs_index, rs_node, layers, key)
            if rs is not None:
                real_servers.append(rs)
                where.append(rs_cur.item(rs_node, rs.name))
        pairs = list(zip(where, real_servers, strict=True))
        _unique([(c, r.name, r.name) for c, r in pairs], "name")
        _unique([(c, r.name, str(r.key)) for c, r in pairs], "address")
    if key is None:
        return None
    spec = VirtualServerSpec(key=key, scheduler=scheduler, persistence_timeout_s=persistence)
    return VirtualServerConfig(name, spec, on_failure, tuple(real_servers))


def _vs_key(cur: Cursor, f: Layer, layers: _Layers) -> VirtualServerKey | None:
    if "fwmark" in f:
        if "address" in f or "port" in f:
            cur.error("fwmark and address/port are exclusive: use one or the other")
        if "protocol" in f:
            f["protocol"].error(
                "a fwmark virtual server has no protocol (the mark selects packets)"
            )
        mark = f["fwmark"].integer(1, 0xFFFFFFFF)
        family = 4
        if "family" in f:
            family = 6 if f["family"].choice(frozenset({"ipv4", "ipv6"}), "family") == "ipv6" else 4
        return VirtualServerKey.for_fwmark(mark, family) if mark is not None else None
    if "family" in f:
        f["family"].error("family is only for fwmark virtual servers (an address implies it)")
    address = f["address"].address() if "address" in f else None
    port = f["port"].port() if "port" in f else None
    if "address" not in f:
        cur.error("address is missing (or give fwmark)")
    if "port" not in f:
        cur.error("port is missing")
    protocol = Protocol(layers.values.get("protocol") or "tcp")
    if address is None or port is None:
        return None
    return VirtualServerKey.for_address(protocol, address, port)


def _real_server(
    parent: Cursor, index: int, node: Any, vs_layers: _Layers, vs_key: VirtualServerKey | None
) -> RealServerConfig | None:
    cur = parent.item(node, _label(node, index))
    fields = cur.mapping(_RS_KEYS)
    if fields is None:
        return None
    name = _name(cur, fields, index)
    layers = vs_layers.push(fields)
    address = fields["address"].address() if "address" in fields else None
    if "address" not in fields:
        cur.error("address is missing")
    forwarding = Forwarding(layers.values.get("forwarding") or "nat")
    port = fields["port"].port() if "port" in fields else None
    if vs_key is not None and address is not None and address_family(address) != vs_key.family:
        fields["address"].error(
            f"address family of {address} does not match the virtual server's (IPv{vs_key.family})"
        )
    if vs_key is not None and forwarding is not Forwarding.NAT and not vs_key.fwmark:
        if port is not None and port != vs_key.port:
            fields["port"].error(
                f"{forwarding.value} forwarding cannot change the port:"
                f" use {vs_key.port} or omit it"
            )
        port = vs_key.port
    if port is None:
        if vs_key is not None and not vs_key.fwmark:
            port = vs_key.port
        elif vs_key is None:
            return None  # the virtual server's own error says why; do not blame its members
        elif "port" not in fields and forwarding is Forwarding.NAT:
            cur.error("port is missing (a fwmark virtual server has no port to inherit)")
            return None
        else:
            port = 0
    weight = layers.values.get("weight")
    checks = _resolve_checks(cur, layers)
    if address is None:
        return None
    return RealServerConfig(
        name=name,
        address=address,
        port=port,
        weight=1 if weight is None else weight,
        forwarding=forwarding,
        checks=checks,
    )


def _resolve_checks(cur: Cursor, layers: _Layers) -> tuple[CheckConfig, ...]:
    """The real server's checks; an explicit empty list means a static (always up) server."""
    if layers.checks is None:
        cur.error(
            "no checks: give checks: [...] here, on its virtual server or in defaults"
            " (checks: [] for a real server that is always up)"
        )
        return ()
    out: list[CheckConfig] = []
    seen: dict[str, int] = {}
    for check in layers.checks:
        timing = _resolve_timing({**layers.timing, **check.timing}, check.cursor)
        name = check.name or check.spec.kind
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            if check.name:
                check.cursor.error(f"duplicate check name {name!r}")
            name = f"{name}-{seen[name]}"
        out.append(CheckConfig(name=name, spec=check.spec, timing=timing))
    return tuple(out)


def _metrics(cur: Cursor) -> MetricsConfig:
    fields = cur.mapping(frozenset({"listen", "enabled"})) or {}
    config = MetricsConfig()
    if "enabled" in fields:
        config = replace(config, enabled=bool(fields["enabled"].boolean()))
    if "listen" in fields:
        listen = fields["listen"].string() or ""
        match = re.match(r"^\[?([^\[\]]*?)\]?:(\d+)$", listen)
        port = int(match.group(2)) if match else 0
        if not match or not 1 <= port <= 65535:
            fields["listen"].error(f"invalid listen address {listen!r} (write HOST:PORT)")
        else:
            config = replace(config, host=match.group(1) or "0.0.0.0", port=port)
    return config


def _reconcile(cur: Cursor) -> ReconcileConfig:
    fields = cur.mapping(frozenset({"interval", "min_interval", "on_stop"})) or {}
    config = ReconcileConfig()
    if "interval" in fields:
        value = fields["interval"].duration(0.1, 3600)
        config = replace(config, interval_s=value or config.interval_s)
    if "min_interval" in fields:
        value = fields["min_interval"].duration(0, 60)
        config = replace(config, min_interval_s=config.min_interval_s if value is None else value)
    if "on_stop" in fields:
        stop = fields["on_stop"].choice(_enum(OnStop), "on_stop")
        config = replace(config, on_stop=OnStop(stop) if stop else OnStop.KEEP)
    return config


__all__ = ["ConfigError", "parse_text"]
