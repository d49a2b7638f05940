"""The Prometheus text format (0.0.4), written directly for the per-check and per-server families.

prometheus_client builds a ``Sample`` (a namedtuple and a label dict) for every series and then
formats each one generically: about 9 µs per series, 4.8 s for the 510 000 series of 10 000 real
servers, all of it on the event loop.  These families are the bulk of the exposition and their
label names never change, so the collectors write their lines here instead.  The daemon's own few
families still go through prometheus_client (``Metrics.exposition`` puts the two together).

A collector fills each family in one call per scrape: the label blocks of its series (built once
per config, ``layout.py``) and their values in the same order.  The lines are written by the C
extension ``healthd._exposition`` (``_exposition.c``: a few copies per line into one buffer,
about 25 ns a line; 10 000 real servers, 52 MB of text, take ~20 ms of CPU), a slice of
``ROWS_PER_PIECE`` series (histograms: ``HISTOGRAMS_PER_PIECE``) at a time, each piece written
when the answer gets to it: a scrape gives the event loop back between pieces, so the probes run
while a large exposition is written.  The pieces are sent as they are (``api.py``), never joined
into one 50 MB string, and nothing is kept between scrapes.  Where the extension is not built,
the same bytes come from Python (one f-string per line: ~60 ms more per scrape at that size, in
smaller pieces).

The output is what ``prometheus_client.generate_latest`` writes for the same families: ``# HELP``
and ``# TYPE`` (a counter under its ``_total`` name), then the samples; the values as ``number``
writes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, repeat
from operator import is_
from types import ModuleType
from typing import Any, Protocol, TypeVar, cast

from prometheus_client.utils import floatToGoString

_exposition: ModuleType | None
try:
    from healthd import _exposition
except ImportError:  # not built: the same text from Python
    _exposition = None

_INF = math.inf
_NUMBERS = frozenset({int, float})
_INTS = frozenset({int})
_HOLE = "\x00"  # where a template takes its label block (str.replace does not rescan the block)
_MAX_TEMPLATES = 4096
# How much of a family one piece of a scrape writes: tens of kB, under glibc's mmap threshold
# (``memory.py``), so a piece reuses the heap a sent one freed instead of mapping fresh pages
# (4 000 rows and 1 000 histograms a piece were 0.4-6 MB each: at 10 000 real servers the
# scrape's peak RSS was ~8 MB higher on the host, and with the threshold fixed every page of
# them was a fault, +60 ms of CPU per scrape).  ``api.py`` gives the event loop back between two
# pieces once 2 ms have passed.  From Python, a tenth of that.
HISTOGRAMS_PER_PIECE = 60
ROWS_PER_PIECE = 600
_PYTHON_SHARE = 10

T = TypeVar("T")
Pairs = tuple[tuple[str, int], ...]  # (value of the extra label, sample value), for ``groups``


class HistogramValues(Protocol):
    @property
    def counts(self) -> list[int]: ...  # the count in each bucket (not cumulative)
    @property
    def count(self) -> int: ...
    @property
    def total(self) -> float: ...


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


def plain(values: Sequence[float]) -> bool:
    """True when ``repr`` writes every value as ``number`` does: ints and finite floats only."""
    types = set(map(type, values))
    if types <= _INTS:
        return True
    if not types <= _NUMBERS:
        return False
    try:
        return math.isfinite(sum(values))  # an infinity or a NaN makes the sum one
    except OverflowError:  # an int too large for a float
        return False


def present(blocks: Sequence[str], values: Sequence[T | None]) -> tuple[Sequence[str], Sequence[T]]:
    """The label blocks and values where there is a value (series that exist only then)."""
    if not any(map(is_, values, repeat(None))):
        return blocks, cast(Sequence[T], values)
    kept = [b for b, v in zip(blocks, values, strict=True) if v is not None]
    return kept, [v for v in values if v is not None]


def label_block(names: Sequence[str], values: Sequence[str]) -> str:
    """``name="value",...``, the values escaped (what the families take as a label block)."""
    pairs = zip(names, values, strict=True)
    return ",".join([f'{name}="{escape(value)}"' for name, value in pairs])


class Family:
    """One metric family.  Each scrape: ``start``, then either one of ``column``, ``groups`` and
    ``histograms`` (the whole family at once), or any number of ``add`` and ``add_histogram``
    (a line or a few at a time); ``data`` is the family's text, encoded.
    """

    __slots__ = (
        "_head",
        "_label",
        "_les",
        "_name",
        "_start",
        "_template",
        "_templates",
        "_whole",
        "head",
        "help",
        "kind",
        "lines",
        "name",
    )

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = f"{name}_total" if kind == "counter" else name
        self.kind = kind
        self.help = help_text
        escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self.head = f"# HELP {self.name} {escaped}\n# TYPE {self.name} {kind}\n"
        self.lines: list[str] = []
        self._whole: bytes | None = None  # this scrape's text, when filled at once
        self._head = self.head.encode()
        self._name = self.name.encode()
        self._start = f"{self.name}{{".encode()  # what every line of a column or group starts with
        self._label = ""  # of the group templates (Python)
        self._templates: dict[Pairs, str] = {}
        self._les: tuple[str, ...] = ()  # of the histogram template (Python)
        self._template = b""

    def start(self) -> None:
        self.lines = []
        self._whole = None

    def data(self) -> bytes:
        if self._whole is not None:
            return self._whole
        return "".join([self.head, *self.lines]).encode()

    # ---- the whole family at once --------------------------------------------------------

    def column(self, blocks: Sequence[str], values: Sequence[float]) -> None:
        """One series per label block, with the value at the same position."""
        self._whole = b"".join(self.column_pieces(blocks, values, len(blocks) or 1))

    def column_pieces(
        self, blocks: Sequence[str], values: Sequence[float], per_piece: int | None = None
    ) -> Iterator[bytes]:
        """``column``, in pieces of ``per_piece`` series, each written when asked for."""
        size = _size(per_piece, ROWS_PER_PIECE)
        c, start = _exposition, self._start
        if c is not None:
            return self._pieces(blocks, values, lambda b, v: c.column(start, b, v), size)
        return self._pieces(blocks, values, self._column_lines, size)

    def _column_lines(self, blocks: Sequence[str], values: Sequence[float]) -> bytes:
        start = f"{self.name}{{"
        if plain(values):
            lines = [f"{start}{b}}} {v!r}\n" for b, v in zip(blocks, values, strict=True)]
        else:
            lines = [f"{start}{b}}} {number(v)}\n" for b, v in zip(blocks, values, strict=True)]
        return "".join(lines).encode()

    def groups(self, blocks: Sequence[str], label: str, pairs: Sequence[Pairs]) -> None:
        """Per label block, one series per (value of ``label``, sample value) in its pairs: a
        state-set, counts by reason.  The sample values must be ints."""
        self._whole = b"".join(self.group_pieces(blocks, label, pairs, len(blocks) or 1))

    def group_pieces(
        self,
        blocks: Sequence[str],
        label: str,
        pairs: Sequence[Pairs],
        per_piece: int | None = None,
    ) -> Iterator[bytes]:
        """``groups``, in pieces of ``per_piece`` label blocks, each written when asked for."""
        size = _size(per_piece, ROWS_PER_PIECE)
        c, start = _exposition, self._start
        if c is not None:
            return self._pieces(blocks, pairs, lambda b, p: c.groups(start, b, label, p), size)
        if label != self._label:
            self._templates.clear()
            self._label = label
        return self._pieces(blocks, pairs, self._group_lines, size)

    def _group_lines(self, blocks: Sequence[str], pairs: Sequence[Pairs]) -> bytes:
        templates, template, label = self._templates, self._group_template, self._label
        if len(templates) > _MAX_TEMPLATES:
            templates.clear()
        try:
            lines = [
                (templates.get(p) or template(label, p)).replace(_HOLE, b)
                for b, p in zip(blocks, pairs, strict=True)
            ]
        except _NoTemplate:
            name = self.name
            lines = [
                f'{name}{{{b},{label}="{x}"}} {number(v)}\n'
                for b, p in zip(blocks, pairs, strict=True)
                for x, v in p
            ]
        return "".join(lines).encode()

    def histograms(
        self, blocks: Sequence[str], values: Sequence[HistogramValues], les: tuple[str, ...]
    ) -> None:
        """Per label block, a histogram (``les`` from ``le_labels``, ints for the counts)."""
        self._whole = b"".join(self.histogram_pieces(blocks, values, les, len(blocks) or 1))

    def histogram_pieces(
        self,
        blocks: Sequence[str],
        values: Sequence[HistogramValues],
        les: tuple[str, ...],
        per_piece: int | None = None,
    ) -> Iterator[bytes]:
        """The family as ``histograms`` writes it, in pieces of ``per_piece`` histograms (the
        first with the family's head), each written when it is asked for: a scrape gives the
        event loop back between two."""
        size = _size(per_piece, HISTOGRAMS_PER_PIECE)
        c, name = _exposition, self._name
        if c is not None:
            return self._pieces(blocks, values, lambda b, v: c.histograms(name, les, b, v), size)
        if les != self._les:
            self._les, self._template = les, _histogram_template(self.name, les).encode()
        return self._pieces(blocks, values, self._histogram_lines, size)

    def _histogram_lines(self, blocks: Sequence[str], values: Sequence[HistogramValues]) -> bytes:
        """Written as bytes (``%`` and ``replace`` on bytes take two thirds of the time they
        take on str, and nothing is left to encode)."""
        hole, bblocks = _HOLE.encode(), [b.encode() for b in blocks]
        if plain([h.total for h in values]):
            template = self._template + b"%r\n"
            lines = [
                (template % (*accumulate(h.counts), h.count, h.count, h.total)).replace(hole, b)
                for b, h in zip(bblocks, values, strict=True)
            ]
        else:
            template = self._template + b"%s\n"
            lines = [
                (
                    template % (*accumulate(h.counts), h.count, h.count, number(h.total).encode())
                ).replace(hole, b)
                for b, h in zip(bblocks, values, strict=True)
            ]
        return b"".join(lines)

    def _pieces(
        self,
        blocks: Sequence[str],
        values: Sequence[Any],
        text_of: Callable[[Sequence[str], Sequence[Any]], bytes],
        per_piece: int,
    ) -> Iterator[bytes]:
        """The family's text from ``text_of`` each slice of its rows, the head first."""
        if not blocks:
            yield self._head
        for start in range(0, len(blocks), per_piece):
            data = text_of(blocks[start : start + per_piece], values[start : start + per_piece])
            yield self._head + data if start == 0 else data

    def _group_template(self, label: str, pairs: Pairs) -> str:
        if any(_HOLE in x for x, _ in pairs):
            raise _NoTemplate
        name = self.name
        template = "".join(f'{name}{{{_HOLE},{label}="{x}"}} {number(v)}\n' for x, v in pairs)
        self._templates[pairs] = template
        return template

    # ---- a few lines at a time -----------------------------------------------------------

    def add(self, labels: str, value: float) -> None:
        self.lines.append(f"{self.name}{{{labels}}} {number(value)}\n")

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


def _size(per_piece: int | None, default: int) -> int:
    """The size of a piece: as asked, else the default (a tenth of it when Python writes the
    lines: it is about ten times slower than C)."""
    if per_piece is not None:
        return per_piece
    return default if _exposition is not None else max(1, default // _PYTHON_SHARE)


class _NoTemplate(Exception):
    """A label value holds ``_HOLE``: write those lines one by one."""


def _histogram_template(name: str, les: tuple[str, ...]) -> str:
    """A histogram's lines up to its sum's value: ``%d`` for the counts, ``_HOLE`` for labels."""
    buckets = "".join(f"{name}_bucket{{{_HOLE}{le}}} %d\n" for le in les)
    rest = f'{name}_bucket{{{_HOLE},le="+Inf"}} %d\n{name}_count{{{_HOLE}}} %d\n'
    return buckets + rest + f"{name}_sum{{{_HOLE}}} "


def le_labels(bounds: Iterable[float]) -> tuple[str, ...]:
    """The ``,le="..."`` suffix of each bucket, formatted as prometheus_client does."""
    return tuple(f',le="{floatToGoString(b)}"' for b in bounds)  # type: ignore[no-untyped-call]


def render(families: Iterable[Family]) -> str:
    return b"".join(f.data() for f in families).decode()
