"""Summarise py-spy raw (collapsed) output: shares of samples by leaf and by any frame."""

import collections
import sys
from pathlib import Path

for path in sys.argv[1:]:
    leaf = collections.Counter()
    incl = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"== {path}: {total} samples")
    print("  self:")
    for f, n in leaf.most_common(15):
        print(f"    {100 * n / total:5.1f}% {f[:150]}")
    print("  inclusive:")
    for f, n in incl.most_common(40):
        print(f"    {100 * n / total:5.1f}% {f[:150]}")
