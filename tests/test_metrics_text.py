"""The hand-written text exposition says exactly what prometheus_client would say, written by
the C extension (``healthd._exposition``) and by Python alike.

The extension must have been built (``pip install -e .`` builds it): an ImportError fails these
tests rather than skipping them."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families

from healthd import _exposition
from healthd.histogram import Histogram
from healthd.metrics import text
from healthd.metrics.text import Family, label_block, le_labels, present, render

NAMES = ["virtual_server", "real_server"]
AWKWARD = ('web "blue"', "a\\b\nc")  # a quote, a backslash, a newline


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def library_text(families: list[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry).decode()


def parsed(text: str) -> list[tuple[str, str, list[tuple[str, dict[str, str], float]]]]:
    out = []
    for family in text_string_to_metric_families(text):
        samples = [(s.name, s.labels, s.value) for s in family.samples]
        out.append((family.name, family.type, samples))
    return out


@pytest.fixture(params=["c", "python"])
def writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test that takes it runs with the C extension writing the lines, then Python."""
    if request.param == "python":
        monkeypatch.setattr(text, "_exposition", None)
    else:
        assert text._exposition is _exposition
    yield request.param


def test_counter_and_gauge_lines_match_the_library_with_awkward_label_values() -> None:
    ours_counter = Family("healthd_x", "counter", "Things done\nby a real server")
    ours_gauge = Family("healthd_y_seconds", "gauge", "A time")
    lib_counter = CounterMetricFamily("healthd_x", "Things done\nby a real server", labels=NAMES)
    lib_gauge = GaugeMetricFamily("healthd_y_seconds", "A time", labels=NAMES)
    values: list[float] = [0, 7, 2**40, 0.1, 1764000000.25, 1e-7, 1e22, math.inf, -math.inf]
    for i, value in enumerate(values):
        names = (AWKWARD[0], f"{AWKWARD[1]}{i}")
        ours_counter.add(label_block(NAMES, names), abs(value))
        lib_counter.add_metric(list(names), abs(value))
        ours_gauge.add(label_block(NAMES, names), value)
        lib_gauge.add_metric(list(names), value)
    ours = render([ours_counter, ours_gauge])
    assert parsed(ours) == parsed(library_text([lib_counter, lib_gauge]))
    # and the header lines are the library's, byte for byte
    head = [line for line in ours.splitlines() if line.startswith("#")]
    lib = library_text([lib_counter, lib_gauge]).splitlines()
    assert head == [line for line in lib if line.startswith("#")]


def test_nan_survives() -> None:
    family = Family("healthd_z", "gauge", "z")
    family.add(label_block(NAMES, ("a", "b")), math.nan)
    [(_, _, [(_, _, value)])] = parsed(render([family]))
    assert math.isnan(value)


def test_histogram_lines_match_the_library() -> None:
    bounds = (0.0005, 0.001, 0.0025, 1.0, 10.0)
    ours = Family("healthd_d_seconds", "histogram", "Durations")
    lib = HistogramMetricFamily("healthd_d_seconds", "Durations", labels=NAMES)
    cumulative, count, total = [1, 3, 3, 8, 9], 11, 23.5
    block = label_block(NAMES, ("v", "r"))
    ours.add_histogram(block, le_labels(bounds), cumulative, count, total)
    buckets = [(str(b), c) for b, c in zip(bounds, cumulative, strict=True)]
    lib.add_metric(["v", "r"], [*buckets, ("+Inf", count)], total)
    assert parsed(render([ours])) == parsed(library_text([lib]))


def test_an_empty_family_still_has_its_header() -> None:
    assert render([Family("healthd_e", "counter", "e")]) == (
        "# HELP healthd_e_total e\n# TYPE healthd_e_total counter\n"
    )


# ---- whole families at once (what the collectors use) ----------------------------------------

VALUES: list[float] = [0, 7, 2**70, 0.1, -0.0, 1764000000.25, 1e22, math.inf, -math.inf, math.nan]


def _line_by_line(name: str, kind: str, blocks: list[str], values: Sequence[float]) -> bytes:
    family = Family(name, kind, "h")
    family.start()
    for block, value in zip(blocks, values, strict=True):
        family.add(block, value)
    return family.data()


def _column(name: str, kind: str, blocks: list[str], values: Sequence[float]) -> bytes:
    family = Family(name, kind, "h")
    family.start()
    family.column(blocks, values)
    return family.data()


def test_a_column_is_written_as_line_by_line_whatever_the_values(writer: str) -> None:
    blocks = [label_block(NAMES, (AWKWARD[0], f"{AWKWARD[1]}{i}")) for i in range(len(VALUES))]
    for values in (VALUES, [1, 2, 3], [0.5, 2.0, 1e-7], [True, 1, 1.0], [2**63, 0.5]):
        ours = _column("healthd_g", "gauge", blocks[: len(values)], values)
        assert ours == _line_by_line("healthd_g", "gauge", blocks[: len(values)], values)
    lib = GaugeMetricFamily("healthd_g", "h", labels=NAMES)
    for i, value in enumerate(VALUES[:-1]):  # NaN != NaN: test_nan_survives
        lib.add_metric([AWKWARD[0], f"{AWKWARD[1]}{i}"], value)
    ours_text = _column("healthd_g", "gauge", blocks[:-1], VALUES[:-1]).decode()
    assert parsed(ours_text) == parsed(library_text([lib]))


def test_groups_match_the_library_even_with_a_nul_in_a_label_value(writer: str) -> None:
    blocks = [label_block(NAMES, ("web", "a\x00b")), label_block(NAMES, ("web", "c"))]
    for extra in ("state", "odd\x00"):
        pairs = [((extra, 1), ("down", 0)), ((extra, 0), ("down", 2))]
        ours = Family("healthd_s", "gauge", "s")
        ours.start()
        ours.groups(blocks, "state", pairs)
        lib = GaugeMetricFamily("healthd_s", "s", labels=[*NAMES, "state"])
        for rs, group in zip(("a\x00b", "c"), pairs, strict=True):
            for state, value in group:
                lib.add_metric(["web", rs, state], value)
        assert parsed(render([ours])) == parsed(library_text([lib]))


def test_histograms_match_the_library_and_line_by_line(writer: str) -> None:
    bounds = (0.0005, 0.001, 2.5)
    les = le_labels(bounds)
    blocks = [label_block(NAMES, ("v", "r%d")), label_block(NAMES, ("v", 'x"'))]
    for total in (23.5, math.inf, 0):
        values = [Histogram(bounds, [1, 2, 0], 4, total), Histogram(bounds, [0, 0, 2], 2, 0.5)]
        ours = Family("healthd_d_seconds", "histogram", "Durations")
        ours.start()
        ours.histograms(blocks, values, les)
        one_by_one = Family("healthd_d_seconds", "histogram", "Durations")
        for block, h in zip(blocks, values, strict=True):
            one_by_one.add_histogram(block, les, h.cumulative, h.count, h.total)
        assert ours.data() == one_by_one.data()
        lib = HistogramMetricFamily("healthd_d_seconds", "Durations", labels=NAMES)
        for rs, h in zip(("r%d", 'x"'), values, strict=True):
            buckets = [(str(b), c) for b, c in zip(bounds, h.cumulative, strict=True)]
            lib.add_metric(["v", rs], [*buckets, ("+Inf", h.count)], h.total)
        assert parsed(render([ours])) == parsed(library_text([lib]))


def test_histograms_in_pieces_are_the_same_text(writer: str) -> None:
    """A scrape writes a large family of histograms a few hundred at a time; joined, the pieces
    are the family, and only the first carries its head."""
    bounds = (0.001, 0.5)
    les = le_labels(bounds)
    blocks = [label_block(NAMES, ("v", f"r{i}")) for i in range(5)]
    values = [Histogram(bounds, [i, 1], i + 1, 0.25 * i) for i in range(5)]
    whole = Family("healthd_d_seconds", "histogram", "Durations")
    whole.start()
    whole.histograms(blocks, values, les)
    pieces = list(
        Family("healthd_d_seconds", "histogram", "Durations").histogram_pieces(
            blocks, values, les, per_piece=2
        )
    )
    assert len(pieces) == 3
    assert b"".join(pieces) == whole.data()
    assert [p.count(b"# TYPE") for p in pieces] == [1, 0, 0]
    empty = list(
        Family("healthd_d_seconds", "histogram", "Durations").histogram_pieces([], [], les)
    )
    assert empty == [b"# HELP healthd_d_seconds Durations\n# TYPE healthd_d_seconds histogram\n"]


def _scrape(family: Family, blocks: list[str], values: list[float]) -> bytes:
    family.start()
    family.column(blocks, values)
    return family.data()


def test_scrape_after_scrape_shows_every_change_of_value(writer: str) -> None:
    family = Family("healthd_k", "gauge", "h")
    blocks = [label_block(NAMES, ("v", str(i))) for i in range(3)]
    first = _scrape(family, blocks, [1, 2.5, 0.0])
    assert _scrape(family, blocks, [1, 2.5, 0.0]) == first
    # changes a cache keyed on equal values would miss: one value, an int that became a float,
    # a zero that became negative
    for values in (
        [1, 2.5, 3],
        [1.0, 2.5, 3],
        [1.0, 2.5, -0.0],
        [1.0, 2.5, 0.0],
        [2**70, 2.5, 0.0],
    ):
        again = _scrape(family, blocks, list(values))
        assert again == _line_by_line("healthd_k", "gauge", blocks, values)
        assert _scrape(family, blocks, list(values)) == again
    renamed = [label_block(NAMES, ("w", str(i))) for i in range(3)]  # same values, new labels
    assert _scrape(family, renamed, [2**70, 2.5, 0.0]).count(b'virtual_server="w"') == 3


def test_groups_show_a_changed_count(writer: str) -> None:
    family = Family("healthd_f", "counter", "f")
    blocks = [label_block(NAMES, ("v", "a")), label_block(NAMES, ("v", "b"))]
    zeros = (("refused", 0), ("timeout", 0))
    for failures in ([zeros, zeros], [zeros, zeros], [zeros, (("refused", 1), ("timeout", 0))]):
        family.start()
        family.groups(blocks, "reason", list(failures))
        text = family.data().decode()
    assert 'healthd_f_total{virtual_server="v",real_server="b",reason="refused"} 1\n' in text
    assert 'healthd_f_total{virtual_server="v",real_server="a",reason="refused"} 0\n' in text


def test_the_extension_refuses_what_it_cannot_write_rather_than_guess() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        _exposition.column(b"x{", ["a", "b"], [1])
    with pytest.raises(TypeError):
        _exposition.column(b"x{", [b"a"], [1])  # a label block is str
    with pytest.raises(TypeError):
        _exposition.groups(b"x{", ["a"], "state", [(("up", 1, 2),)])
    with pytest.raises(ValueError, match="differ"):
        _exposition.histograms(b"x", (',le="1.0"',), ["a"], [Histogram((1.0, 2.0))])
    with pytest.raises(TypeError):
        _exposition.column(b"x{", ["a"], ["1"])  # a value is a number


def test_the_same_bytes_from_c_and_python_over_many_values(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [label_block(NAMES, ("v", f"r{i}")) for i in range(len(VALUES) * 7)]
    values = [v * k for k in (1, -1, 3, 0.5, 2, 1, 1) for v in VALUES]
    pairs = [(("up", i % 3), ("down", -i), ("big", 2**64 + i)) for i in range(len(blocks))]
    bounds = (0.001, 0.5, 1.0)
    hists = [Histogram(bounds, [i, 2**40, 0], 2**40 + i + 3, i * 0.1) for i in range(len(blocks))]
    les = le_labels(bounds)

    def written() -> list[bytes]:
        out = []
        for family in (Family("c_g", "gauge", "g"), Family("c_s", "gauge", "s")):
            family.start()
            if family.name == "c_g":
                family.column(blocks, values)
            else:
                family.groups(blocks, "state", pairs)
            out.append(family.data())
        family = Family("c_h_seconds", "histogram", "h")
        family.start()
        family.histograms(blocks, hists, les)
        out.append(family.data())
        return out

    from_c = written()
    monkeypatch.setattr(text, "_exposition", None)
    assert written() == from_c


def test_present_keeps_the_series_that_have_a_value() -> None:
    blocks = ["a", "b", "c"]
    assert present(blocks, [1, 2, 3]) == (blocks, [1, 2, 3])
    assert present(blocks, [None, 0, None]) == (["b"], [0])


def test_c_writes_every_float_as_repr_does_thousandths_and_whole_numbers_too() -> None:
    """Timestamps are kept to the millisecond and written by a shortcut (``put_double``); it
    and the general path must both say what ``repr`` says, at the shortcut's edges too."""
    rng = random.Random(17)
    edges = [0.0, -0.0, 0.001, -0.001, 0.0005, 0.1, 0.3, 0.999, 1.001, 99.999, 1e-7, 0.0001]
    edges += [4.999e11, 5e11, -5e11, 2.0**39, 1e15, 1e16 - 2, 1e16, -1e16, 2.0**53, 3e20]
    values = list(edges)
    for _ in range(20000):
        values.append(round(1764900000 + rng.random() * 1e6, 3))  # Unix times, as kept
        values.append(rng.randint(-(10**15), 10**15) / 1000)  # any number of thousandths
        values.append(float(rng.randint(-(10**17), 10**17)))  # whole numbers, big ones too
        values.append(rng.random() * 10 ** rng.randint(-10, 20))  # anything else
    lines = _exposition.column(b"m{", ["x"] * len(values), values).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [repr(v) for v in values]
