"""A histogram as plain numbers (pure: no prometheus_client, no clock).

The metrics keep one per check for probe durations (``metrics.records``), and the probe
workers bucket their schedule delays in one per batch, which the daemon merges into its own:
the workers import this module, never prometheus_client.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

# How late something ran: probes against their schedule, the event loop against its timer.
DELAY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class Histogram:
    """A classic histogram: a count per bucket (values above the last bound only in ``count``),
    the count of all values, and their sum.

    An observation adds one to one bucket; the cumulative counts the exposition wants are made
    when read (``cumulative``): a probe's duration is observed every interval, a scrape reads it
    every 15 s or so.
    """

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # values in (bound before, bound]
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.count += 1
        self.total += value

    def merge(self, counts: Sequence[int], count: int, total: float) -> None:
        """Add another histogram's figures over the same bounds (a probe worker's batch)."""
        mine = self.counts
        if len(counts) == len(mine):
            mine[:] = map(operator.add, mine, counts)  # in place, at C speed (per check drained)
        else:
            for i, n in enumerate(counts):
                mine[i] += n
        self.count += count
        self.total += total

    @property
    def cumulative(self) -> list[int]:
        """The count at or below each bound."""
        return list(itertools.accumulate(self.counts))
