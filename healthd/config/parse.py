"""The configuration schema: YAML nodes to a validated ``Config``.  Pure: no file or clock access.

Inheritance: ``defaults`` -> virtual server -> real server -> check.  ``check:`` holds timing
(interval, timeout, rise, fall, initial_state); ``checks:`` is a list of checks, and a list at an
inner level replaces the outer one.
"""

from __future__ import annotations

from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from healthd.config.checks import (
    TIMING_KEYS,
    Layer,
    ParsedCheck,
    parse_checks,
    resolve_timing,
    timing_fields,
)
from healthd.config.scriptuser import with_scripts_user
from healthd.config.settings import TOP_LEVEL_SETTINGS, parse_notify, parse_settings
from healthd.config.source import ConfigError, Cursor, Issues, compose
from healthd.config.types import (
    SCHEDULERS,
    CheckConfig,
    Config,
    OnStop,
    RealServerConfig,
    VirtualServerConfig,
)
from healthd.model import (
    Forwarding,
    OnFailure,
    Protocol,
    VirtualServerKey,
    VirtualServerSpec,
    address_family,
)

_INHERITED = frozenset(
    {"check", "checks", "forwarding", "scheduler", "protocol", "weight", "notify"}
)
_TOP_KEYS = TOP_LEVEL_SETTINGS | {"defaults", "virtual_servers"}
_VS_KEYS = _INHERITED | {
    "name",
    "address",
    "port",
    "fwmark",
    "family",
    "on_failure",
    "persistence_timeout",
    "notify_pool",
    "real_servers",
}
_RS_KEYS = frozenset(
    {"name", "address", "port", "weight", "forwarding", "check", "checks", "notify"}
)


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
    settings = parse_settings(top)
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
    config = Config(path=file, virtual_servers=tuple(virtual_servers), **settings)
    return with_scripts_user(config)  # script checks run as scripts.user (part of their spec)


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
        self,
        values: dict[str, Any],
        timing: dict[str, Any],
        checks: list[ParsedCheck] | None,
        shared: dict[Any, Any],
    ) -> None:
        self.values = values
        self.timing = timing
        self.checks = checks
        # One object for equal timings, checks and check lists over the whole file: thousands
        # of real servers usually have the same ones (~150 bytes each per real server saved).
        self.shared = shared

    @classmethod
    def start(cls, layer: Layer) -> _Layers:
        return cls({}, {}, None, {}).push(layer)

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
            timing.update(timing_fields(layer["check"].mapping(TIMING_KEYS) or {}))
        checks = self.checks
        if "checks" in layer:
            checks = parse_checks(layer["checks"])
        if "notify" in layer:
            values["notify"] = parse_notify(layer["notify"])
        return _Layers(values, timing, checks, self.shared)


def _enum(
    cls: type[Forwarding] | type[Protocol] | type[OnFailure] | type[OnStop],
) -> frozenset[str]:
    return frozenset(m.value for m in cls)


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
    pool_notify = parse_notify(fields["notify_pool"]) if "notify_pool" in fields else None
    return VirtualServerConfig(name, spec, on_failure, tuple(real_servers), pool_notify)


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
        notify=layers.values.get("notify"),
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
    shared = layers.shared
    for check in layers.checks:
        timing = resolve_timing({**layers.timing, **check.timing}, check.cursor)
        timing = shared.setdefault(timing, timing)
        name = check.name or check.spec.kind
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            if check.name:
                check.cursor.error(f"duplicate check name {name!r}")
            name = f"{name}-{seen[name]}"
        config = CheckConfig(name=name, spec=check.spec, timing=timing)
        out.append(shared.setdefault(config, config))
    checks = tuple(out)
    kept: tuple[CheckConfig, ...] = shared.setdefault(checks, checks)
    return kept


__all__ = ["ConfigError", "parse_text"]
