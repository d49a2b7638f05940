"""YAML text to position-aware nodes, and typed readers that collect every error.

Errors are reported as ``FILE:LINE: key.path: what is wrong`` (``ConfigIssue.__str__``).  The
readers never raise on bad input: they record an issue and return None, so one pass reports
every problem in the file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from healthd.config.compose import compose as compose_nodes


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass
class Issues:
    file: str
    items: list[ConfigIssue] = field(default_factory=list)

    def add(self, node: Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.items.append(ConfigIssue(self.file, line, path, message))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float | None:
    """``250ms``, ``2s``, ``1.5s``, ``1m``, ``1h`` or a bare number of seconds; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_S[match.group(2)]
    return None


def compose(text: str, issues: Issues) -> Node | None:
    """Parse YAML text into nodes; a syntax error becomes an issue with its line."""
    try:
        return compose_nodes(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or "invalid YAML"
        issues.items.append(ConfigIssue(issues.file, line, "", f"invalid YAML: {problem}"))
    except yaml.YAMLError as exc:
        issues.items.append(ConfigIssue(issues.file, 1, "", f"invalid YAML: {exc}"))
    return None


_constructor = SafeConstructor()


class Cursor:
    """A node plus its key path, with typed readers that record issues instead of raising."""

    def __init__(self, node: Node | None, path: str, issues: Issues) -> None:
        self.node = node
        self.path = path
        self.issues = issues

    def error(self, message: str, node: Node | None = None) -> None:
        self.issues.add(node if node is not None else self.node, self.path, message)

    def child(self, node: Node, name: str) -> Cursor:
        path = f"{self.path}.{name}" if self.path else name
        return Cursor(node, path, self.issues)

    # ---- structure ----------------------------------------------------------------------------

    def mapping(self, allowed: frozenset[str]) -> dict[str, Cursor] | None:
        """The entries of a mapping; unknown and duplicate keys are issues."""
        node = self.node
        if not isinstance(node, MappingNode):
            self.error("must be a mapping")
            return None
        try:
            _constructor.flatten_mapping(node)  # YAML merge keys (<<)
        except yaml.MarkedYAMLError as exc:
            self.error(f"invalid merge key (<<): {exc.problem}")
            return None
        entries: dict[str, Cursor] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.error("keys must be strings", key_node)
                continue
            if key in entries:
                self.issues.add(key_node, self.child(key_node, key).path, "duplicate key")
                continue
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.issues.add(
                    key_node,
                    self.child(key_node, key).path,
                    f"unknown key (expected one of: {hint})",
                )
                continue
            entries[key] = self.child(value_node, key)
        return entries

    def sequence(self) -> Iterator[tuple[int, Node]]:
        node = self.node
        if not isinstance(node, SequenceNode):
            self.error("must be a list")
            return
        yield from enumerate(node.value)

    def item(self, node: Node, label: str) -> Cursor:
        return Cursor(node, f"{self.path}[{label}]", self.issues)

    # ---- scalars ------------------------------------------------------------------------------

    def scalar(self) -> object:
        if not isinstance(self.node, ScalarNode):
            self.error("must be a single value")
            return None
        value = _constructor.construct_object(self.node, deep=True)
        # the constructor remembers every node it built: forget it, or the whole document's
        # nodes outlive the parse (12 MB at 10 000 real servers)
        _constructor.constructed_objects.pop(self.node, None)
        return value

    def string(self) -> str | None:
        value = self.scalar()
        if value is None and isinstance(self.node, ScalarNode):
            self.error("must not be empty")
            return None
        if value is not None and not isinstance(value, str):
            if isinstance(value, int | float) and not isinstance(value, bool):
                return str(value)
            self.error("must be a string")
            return None
        return value

    def choice(self, choices: frozenset[str], what: str) -> str | None:
        value = self.string()
        if value is None:
            return None
        if value not in choices:
            self.error(f"unknown {what} {value!r} (expected one of: {', '.join(sorted(choices))})")
            return None
        return value

    def integer(self, low: int, high: int) -> int | None:
        value = self.scalar()
        if isinstance(value, bool) or not isinstance(value, int):
            if value is not None or isinstance(self.node, ScalarNode):
                self.error("must be an integer")
            return None
        if not low <= value <= high:
            self.error(f"{value} is out of range ({low}..{high})")
            return None
        return value

    def integer_or(self, word: str, low: int, high: int) -> int | str | None:
        """An integer in ``low..high``, or ``word`` (``workers: auto``)."""
        if isinstance(self.node, ScalarNode) and self.node.value == word:
            return word
        value = self.scalar()
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        if value is not None or isinstance(self.node, ScalarNode):
            self.error(f"must be {word} or an integer {low}..{high}, not {value!r}")
        return None

    def boolean(self) -> bool | None:
        value = self.scalar()
        if not isinstance(value, bool):
            self.error("must be true or false")
            return None
        return value

    def duration(self, low_s: float, high_s: float) -> float | None:
        raw = self.scalar()
        value = parse_duration(raw)
        if value is None:
            self.error(f"invalid duration {raw!r} (write e.g. 250ms, 2s, 1m)")
            return None
        if not low_s <= value <= high_s:
            self.error(f"{raw} is out of range ({_fmt_s(low_s)}..{_fmt_s(high_s)})")
            return None
        return value

    def address(self) -> str | None:
        # The text as written: YAML 1.1 reads an unquoted 2001:0:0:0:0:0:0:1 as a base-60 number.
        if isinstance(self.node, ScalarNode) and self.node.tag.endswith((":int", ":float")):
            value: str | None = str(self.node.value)
        else:
            value = self.string()
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            self.error(f"invalid IP address {value!r}")
            return None

    def port(self) -> int | None:
        return self.integer(1, 65535)


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
