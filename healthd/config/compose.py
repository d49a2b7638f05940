"""YAML text to nodes that carry their line and nothing more.  Pure.

PyYAML's composer gives every node a ``__dict__`` and two marks (file, index, line, column):
about 300 bytes of bookkeeping per scalar, 30 MB at the peak of reading a config of 10 000 real
servers, and a daemon's resident memory never shrinks back below its peak.  The config reader
needs a node's kind, tag, value and line.  These nodes are PyYAML's node classes (the
constructor and merge keys work on them unchanged) with slots instead of a ``__dict__``, and
one mark per line, shared by every node that starts on it.

Events come from libyaml when PyYAML has it (its wheels do), else from the pure-Python parser;
tags are resolved by PyYAML's resolver, anchors and aliases work as in ``yaml.compose``.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineMark:
    """Where a node starts: its line (0-based, like PyYAML's marks)."""

    __slots__ = ("line",)

    name = "<config>"
    column = 0
    index = 0
    buffer = None
    pointer = None

    def __init__(self, line: int) -> None:
        self.line = line

    def get_snippet(self) -> None:
        return None

    def __str__(self) -> str:
        return f'  in "{self.name}", line {self.line + 1}'


class Scalar(ScalarNode):
    __slots__ = ("end_mark", "start_mark", "style", "tag", "value")


class Sequence(SequenceNode):
    __slots__ = ("end_mark", "flow_style", "start_mark", "tag", "value")


class Mapping(MappingNode):
    __slots__ = ("end_mark", "flow_style", "start_mark", "tag", "value")


def compose(text: str) -> Node | None:
    """The document's root node, None for an empty document; raises ``yaml.YAMLError``."""
    loader: Any = _LOADER(text)
    try:
        return _Composer(loader).document()
    finally:
        loader.dispose()


class _Composer:
    def __init__(self, events: Any) -> None:
        self.events = events
        self.anchors: dict[str, Node] = {}
        self.marks: dict[int, LineMark] = {}
        # one string per distinct short scalar (keys and common values repeat thousands of
        # times); a table of this parse's own, not sys.intern's, which never shrinks again
        self.strings: dict[str, str] = {}

    def document(self) -> Node | None:
        events = self.events
        events.get_event()  # stream start
        if events.check_event(StreamEndEvent):
            return None
        events.get_event()  # document start
        root = self.node()
        events.get_event()  # document end
        if not events.check_event(StreamEndEvent):
            event: Any = events.get_event()
            raise ComposerError(
                "expected a single document in the stream",
                None,
                "but found another document",
                event.start_mark,
            )
        return root

    def mark(self, line: int) -> LineMark:
        mark = self.marks.get(line)
        if mark is None:
            mark = self.marks[line] = LineMark(line)
        return mark

    def node(self) -> Node:
        events = self.events
        event: Any = events.get_event()
        where: Any = event.start_mark  # libyaml's or PyYAML's mark
        if isinstance(event, AliasEvent):
            if event.anchor not in self.anchors:
                raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", where)
            return self.anchors[event.anchor]
        mark = self.mark(event.start_mark.line)
        node: Node
        if isinstance(event, ScalarEvent):
            node = Scalar.__new__(Scalar)
            node.tag = self._tag(event.tag, ScalarNode, event.value, event.implicit)
            value = event.value
            node.value = self.strings.setdefault(value, value) if len(value) <= 64 else value
            node.style = event.style
        elif isinstance(event, SequenceStartEvent):
            node = Sequence.__new__(Sequence)
            node.tag = self._tag(event.tag, SequenceNode, None, event.implicit)
            node.flow_style = event.flow_style
            node.value = []
        elif isinstance(event, MappingStartEvent):
            node = Mapping.__new__(Mapping)
            node.tag = self._tag(event.tag, MappingNode, None, event.implicit)
            node.flow_style = event.flow_style
            node.value = []
        else:  # pragma: no cover - the parser never yields anything else here
            raise ComposerError(None, None, f"unexpected {event!r}", event.start_mark)
        node.start_mark = node.end_mark = mark
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            if anchor in self.anchors:
                raise ComposerError(
                    f"found duplicate anchor {anchor!r}",
                    None,
                    "second occurrence",
                    event.start_mark,
                )
            self.anchors[anchor] = node
        if isinstance(node, Sequence):
            while not events.check_event(SequenceEndEvent):
                node.value.append(self.node())
            events.get_event()
        elif isinstance(node, Mapping):
            while not events.check_event(MappingEndEvent):
                key = self.node()
                node.value.append((key, self.node()))
            events.get_event()
        return node

    def _tag(self, tag: str | None, kind: type[Node], value: str | None, implicit: Any) -> str:
        if tag is None or tag == "!":
            resolved: str = self.events.resolve(kind, value, implicit)
            return resolved
        return tag
