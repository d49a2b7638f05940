"""The Prometheus text format (0.0.4), written directly for the per-check and per-server families.

prometheus_client builds a ``Sample`` (a namedtuple and a label dict) for every series and then
formats each one generically: about 9 µs per series, 4.8 s for the 510 000 series of 10 000 real
servers, all of it on the event loop.  These families are the bulk of the exposition and their
label names never change, so the collectors write their lines here instead: each label block is
escaped once and kept (``LabelBlocks``), a line is one f-string.  The daemon's own few families
still go through prometheus_client (``Metrics.exposition`` joins the two).

The output is what ``prometheus_client.generate_latest`` writes for the same families: ``# HELP``
and ``# TYPE`` (a counter under its ``_total`` name), then the samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from prometheus_client.utils import floatToGoString

_INF = math.inf


def escape(value: str) -> str:
    """A label value as the text format wants it (backslash, newline and double quote escaped)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    """A sample value: integers as integers, floats in full precision, ``+Inf``, ``NaN``."""
    if type(value) is int:
        return str(value)
    if value != value:
        return "NaN"
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    return repr(float(value))


class LabelBlocks:
    """``name="value",...`` for a tuple of label values, escaped once and then remembered.

    ``forget_unless`` drops everything when the key it is given changes (pass the current config:
    names that left it do not stay in memory).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._blocks: dict[tuple[str, ...], str] = {}
        self._key: object = None

    def forget_unless(self, key: object) -> None:
        if key is not self._key:
            self._blocks.clear()
            self._key = key

    def __call__(self, values: tuple[str, ...]) -> str:
        block = self._blocks.get(values)
        if block is None:
            pairs = zip(self._names, values, strict=True)
            block = ",".join(f'{name}="{escape(value)}"' for name, value in pairs)
            self._blocks[values] = block
        return block


class Family:
    """One metric family's lines; ``labels`` arguments are blocks from ``LabelBlocks``.

    A collector keeps its families from one scrape to the next and calls ``start`` first: the
    lines go, and what ``add_group`` and ``add_static`` remember stays while the key given to
    ``start`` (the config) does.
    """

    __slots__ = ("_key", "_memo", "help", "kind", "lines", "name")

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = f"{name}_total" if kind == "counter" else name
        self.kind = kind
        self.help = help_text
        self.lines: list[str] = []
        self._memo: dict[object, str] = {}
        self._key: object = None

    def start(self, key: object) -> None:
        # A memo larger than a few scrapes' worth holds values that are gone: start it again.
        if key is not self._key or len(self._memo) > 4 * len(self.lines) + 1024:
            self._memo.clear()
            self._key = key
        self.lines = []

    def add(self, labels: str, value: float) -> None:
        self.lines.append(f"{self.name}{{{labels}}} {number(value)}\n")

    def add_static(self, labels: str, value: float) -> None:
        """``add`` for a value that rarely changes (a setting, an attribute): its line is kept."""
        key = (labels, value)
        line = self._memo.get(key)
        if line is None:
            line = self._memo[key] = f"{self.name}{{{labels}}} {number(value)}\n"
        self.lines.append(line)

    def add_group(self, labels: str, label: str, pairs: tuple[tuple[str, float], ...]) -> None:
        """One line per (value of ``label``, sample value) in ``pairs`` (a state-set, counts by
        reason), kept as one piece while ``pairs`` stays the same."""
        key = (labels, label, pairs)
        chunk = self._memo.get(key)
        if chunk is None:
            name = self.name
            chunk = "".join(f'{name}{{{labels},{label}="{x}"}} {number(v)}\n' for x, v in pairs)
            self._memo[key] = chunk
        self.lines.append(chunk)

    def add_histogram(
        self, labels: str, les: Sequence[str], cumulative: Sequence[int], count: int, total: float
    ) -> None:
        """``les`` from ``le_labels(bounds)``; ``cumulative`` the counts per bound."""
        name, lines = self.name, self.lines
        for le, c in zip(les, cumulative, strict=True):
            lines.append(f"{name}_bucket{{{labels}{le}}} {c}\n")
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}\n')
        lines.append(f"{name}_count{{{labels}}} {count}\n")
        lines.append(f"{name}_sum{{{labels}}} {number(total)}\n")

    def text(self) -> str:
        help_text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        head = f"# HELP {self.name} {help_text}\n# TYPE {self.name} {self.kind}\n"
        return head + "".join(self.lines)


def le_labels(bounds: Iterable[float]) -> tuple[str, ...]:
    """The ``,le="..."`` suffix of each bucket, formatted as prometheus_client does."""
    return tuple(f',le="{floatToGoString(b)}"' for b in bounds)  # type: ignore[no-untyped-call]


def render(families: Iterable[Family]) -> str:
    return "".join(f.text() for f in families)
