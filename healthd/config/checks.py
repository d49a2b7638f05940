"""Check entries of the configuration: ``checks:`` lists and ``check:`` timing.  Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from yaml.nodes import MappingNode, SequenceNode

from healthd.checkspec import TCP_CLOSES, CheckSpec, CheckTiming, HttpCheck, ScriptCheck, TcpCheck
from healthd.config.source import Cursor
from healthd.model import Health

TIMING_KEYS = frozenset({"interval", "timeout", "rise", "fall", "initial_state"})
_CHECK_COMMON = TIMING_KEYS | {"type", "name"}
_CHECK_KEYS = {
    "tcp": _CHECK_COMMON | {"port", "close"},
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
class ParsedCheck:
    name: str | None
    spec: CheckSpec
    timing: dict[str, Any]
    cursor: Cursor


def timing_fields(layer: Layer) -> dict[str, Any]:
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


def resolve_timing(timing: dict[str, Any], where: Cursor) -> CheckTiming:
    fields = {k: v for k, (v, _) in timing.items() if v is not None}
    result = replace(CheckTiming(), **fields)
    if result.timeout_s >= result.interval_s:
        _, node = timing.get("timeout_s", timing.get("interval_s", (None, where)))
        node.error(
            f"timeout ({result.timeout_s:g}s) must be shorter than"
            f" interval ({result.interval_s:g}s)"
        )
    return result


def parse_checks(cur: Cursor) -> list[ParsedCheck]:
    parsed: list[ParsedCheck] = []
    for index, node in cur.sequence():
        check = _check(cur.item(node, str(index)))
        if check is not None:
            parsed.append(check)
    return parsed


def _check(cur: Cursor) -> ParsedCheck | None:
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
    timing = timing_fields({k: v for k, v in fields.items() if k in TIMING_KEYS})
    spec: CheckSpec | None
    if kind == "tcp":
        spec = _tcp(fields)
    elif kind == "http":
        spec = _http(fields)
    else:
        spec = _script(cur, fields)
    return None if spec is None else ParsedCheck(name, spec, timing, cur)


def _tcp(f: Layer) -> TcpCheck:
    spec = TcpCheck(port=f["port"].port() if "port" in f else None)
    if "close" in f:
        close = f["close"].choice(TCP_CLOSES, "close mode")
        if close is not None:
            spec = replace(spec, close=close)
    return spec


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
