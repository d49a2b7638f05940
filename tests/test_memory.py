"""The daemon's memory goes back to the system when the large tables of a pass are freed, even
after a large block was freed before them (what glibc's moving threshold would keep)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from healthd import memory
if sys.argv[1] == "tuned":
    assert memory.keep_large_apart()
def rss_kb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
big = bytearray(8 << 20)  # a large block, freed: glibc's threshold would rise to its size
del big
tables, pins = [], []
for _ in range(40):
    tables.append(bytearray(256 << 10))  # a pass's large tables (touched: they count in RSS)
    pins.append(bytes(600))  # what stays, allocated in between
before = rss_kb()
del tables
print(before - rss_kb())
"""


def freed_kb(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_large_tables_freed_go_back_to_the_system() -> None:
    assert freed_kb("tuned") >= 9000  # the 10 MB of tables, less a page or so each
    # glibc as it comes keeps them (this is what the tuning is for: if this fails, glibc's
    # behaviour changed and the tuning may no longer be needed)
    assert freed_kb("plain") < 2000
