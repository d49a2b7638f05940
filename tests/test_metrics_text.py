"""The hand-written text exposition says exactly what prometheus_client would say."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families

from healthd.metrics.text import Family, LabelBlocks, le_labels, render

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


def test_counter_and_gauge_lines_match_the_library_with_awkward_label_values() -> None:
    blocks = LabelBlocks(NAMES)
    ours_counter = Family("healthd_x", "counter", "Things done\nby a real server")
    ours_gauge = Family("healthd_y_seconds", "gauge", "A time")
    lib_counter = CounterMetricFamily("healthd_x", "Things done\nby a real server", labels=NAMES)
    lib_gauge = GaugeMetricFamily("healthd_y_seconds", "A time", labels=NAMES)
    values: list[float] = [0, 7, 2**40, 0.1, 1764000000.25, 1e-7, 1e22, math.inf, -math.inf]
    for i, value in enumerate(values):
        names = (AWKWARD[0], f"{AWKWARD[1]}{i}")
        ours_counter.add(blocks(names), abs(value))
        lib_counter.add_metric(list(names), abs(value))
        ours_gauge.add(blocks(names), value)
        lib_gauge.add_metric(list(names), value)
    ours = render([ours_counter, ours_gauge])
    assert parsed(ours) == parsed(library_text([lib_counter, lib_gauge]))
    # and the header lines are the library's, byte for byte
    head = [line for line in ours.splitlines() if line.startswith("#")]
    lib = library_text([lib_counter, lib_gauge]).splitlines()
    assert head == [line for line in lib if line.startswith("#")]


def test_nan_survives() -> None:
    family = Family("healthd_z", "gauge", "z")
    family.add(LabelBlocks(NAMES)(("a", "b")), math.nan)
    [(_, _, [(_, _, value)])] = parsed(render([family]))
    assert math.isnan(value)


def test_histogram_lines_match_the_library() -> None:
    bounds = (0.0005, 0.001, 0.0025, 1.0, 10.0)
    ours = Family("healthd_d_seconds", "histogram", "Durations")
    lib = HistogramMetricFamily("healthd_d_seconds", "Durations", labels=NAMES)
    cumulative, count, total = [1, 3, 3, 8, 9], 11, 23.5
    block = LabelBlocks(NAMES)(("v", "r"))
    ours.add_histogram(block, le_labels(bounds), cumulative, count, total)
    buckets = [(str(b), c) for b, c in zip(bounds, cumulative, strict=True)]
    lib.add_metric(["v", "r"], [*buckets, ("+Inf", count)], total)
    assert parsed(render([ours])) == parsed(library_text([lib]))


def test_an_empty_family_still_has_its_header() -> None:
    assert render([Family("healthd_e", "counter", "e")]) == (
        "# HELP healthd_e_total e\n# TYPE healthd_e_total counter\n"
    )


def test_label_blocks_are_forgotten_when_the_config_changes() -> None:
    blocks = LabelBlocks(["virtual_server"])
    first, second = object(), object()
    blocks.forget_unless(first)
    assert blocks(("web",)) == 'virtual_server="web"'
    blocks.forget_unless(first)
    assert len(blocks._blocks) == 1
    blocks.forget_unless(second)
    assert blocks._blocks == {}
