"""Type stub of the C extension healthd/_exposition.c (the bulk of /metrics' text)."""

from collections.abc import Sequence

from healthd.metrics.text import HistogramValues

def column(start: bytes, blocks: Sequence[str], values: Sequence[float]) -> bytes: ...
def groups(
    start: bytes, blocks: Sequence[str], label: str, pairs: Sequence[tuple[tuple[str, int], ...]]
) -> bytes: ...
def histograms(
    name: bytes, les: tuple[str, ...], blocks: Sequence[str], histograms: Sequence[HistogramValues]
) -> bytes: ...
