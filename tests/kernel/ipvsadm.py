"""Parse ``ipvsadm -Ln`` / ``ipvsadm -Ln --stats`` output, and run ipvsadm (stdlib only).

The parsed table is a plain dict keyed like ipvsadm prints services, with single spaces::

    {
        "TCP 10.0.0.1:80": {
            "scheduler": "rr",
            "flags": [],                  # e.g. ["persistent", "300"], ["ops"]
            "persistent": None,           # persistence timeout in s, if any
            "real_servers": {
                "192.168.1.101:80": {"forward": "Masq", "weight": 1, "active": 0,
                                     "inactive": 0},
            },
        },
        "TCP [fd00:0:0:1::1]:80": {...},
        "FWM 1": {...},
    }

With stats, every service and real server also gets ``"stats"``: conns, inpkts, outpkts,
inbytes, outbytes (use ``--exact``; K/M/G suffixes are expanded if present). Note that
the kernel refreshes these counters in its 2 s estimator timer, so they can lag.
"""

from __future__ import annotations

import re
import subprocess
from typing import NotRequired, TypedDict


class Stats(TypedDict):
    conns: int
    inpkts: int
    outpkts: int
    inbytes: int
    outbytes: int


class RealServer(TypedDict):
    forward: str  # Masq, Route, Tunnel, Local
    weight: int
    active: int
    inactive: int
    stats: NotRequired[Stats]


class VirtualService(TypedDict):
    scheduler: str
    flags: list[str]
    persistent: int | None
    real_servers: dict[str, RealServer]
    stats: NotRequired[Stats]


Table = dict[str, VirtualService]

_PROTOCOLS = ("TCP", "UDP", "SCTP", "FWM")
_SUFFIX = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_STAT_KEYS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")


class ParseError(ValueError):
    pass


def _number(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)", text)
    if not m:
        raise ParseError(f"not a number: {text!r}")
    return int(m.group(1)) * _SUFFIX.get(m.group(2), 1)


def _stats(fields: list[str], line: str) -> Stats:
    if len(fields) != len(_STAT_KEYS):
        raise ParseError(f"expected {len(_STAT_KEYS)} counters: {line!r}")
    values = [_number(f) for f in fields]
    return Stats(
        conns=values[0], inpkts=values[1], outpkts=values[2], inbytes=values[3], outbytes=values[4]
    )


def _is_header(line: str) -> bool:
    return line.startswith(("IP Virtual Server", "Prot ", "  -> RemoteAddress"))


def parse_list(text: str) -> Table:
    """Parse ``ipvsadm -Ln`` output."""
    table: Table = {}
    current: VirtualService | None = None
    for line in text.splitlines():
        if not line.strip() or _is_header(line):
            continue
        fields = line.split()
        if fields[0] in _PROTOCOLS:
            if len(fields) < 3:
                raise ParseError(f"short service line: {line!r}")
            flags = fields[3:]
            persistent = None
            if "persistent" in flags:
                persistent = int(flags[flags.index("persistent") + 1])
            current = VirtualService(
                scheduler=fields[2], flags=flags, persistent=persistent, real_servers={}
            )
            table[f"{fields[0]} {fields[1]}"] = current
        elif fields[0] == "->":
            if current is None or len(fields) != 6:
                raise ParseError(f"unexpected real server line: {line!r}")
            current["real_servers"][fields[1]] = RealServer(
                forward=fields[2],
                weight=int(fields[3]),
                active=int(fields[4]),
                inactive=int(fields[5]),
            )
        else:
            raise ParseError(f"unexpected line: {line!r}")
    return table


def parse_stats(text: str) -> dict[str, tuple[Stats, dict[str, Stats]]]:
    """Parse ``ipvsadm -Ln --stats [--exact]``: service -> (stats, {real server: stats})."""
    result: dict[str, tuple[Stats, dict[str, Stats]]] = {}
    current: dict[str, Stats] | None = None
    for line in text.splitlines():
        if not line.strip() or _is_header(line):
            continue
        fields = line.split()
        if fields[0] in _PROTOCOLS:
            current = {}
            result[f"{fields[0]} {fields[1]}"] = (_stats(fields[2:], line), current)
        elif fields[0] == "->":
            if current is None:
                raise ParseError(f"real server before any service: {line!r}")
            current[fields[1]] = _stats(fields[2:], line)
        else:
            raise ParseError(f"unexpected line: {line!r}")
    return result


def merge_stats(table: Table, stats: dict[str, tuple[Stats, dict[str, Stats]]]) -> Table:
    """Add the ``"stats"`` of ``parse_stats`` output to a ``parse_list`` table (in place)."""
    for key, (svc_stats, rs_stats) in stats.items():
        if key not in table:  # changed between the two ipvsadm calls
            continue
        table[key]["stats"] = svc_stats
        for rs, st in rs_stats.items():
            if rs in table[key]["real_servers"]:
                table[key]["real_servers"][rs]["stats"] = st
    return table


class Ipvsadm:
    """Runs ipvsadm. Calling it returns the parsed table: ``ipvsadm(stats=True)``."""

    def __init__(self, binary: str = "ipvsadm") -> None:
        self.binary = binary

    def run(self, *args: str, input: str | None = None) -> str:
        p = subprocess.run(
            [self.binary, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if p.returncode != 0:
            raise RuntimeError(
                f"`ipvsadm {' '.join(args)}` failed (exit {p.returncode}): {p.stderr.strip()}"
                + (f"\n--- input:\n{input}" if input else "")
            )
        return p.stdout

    def restore(self, rules: str) -> None:
        """Apply many rules in one process: ``-A -t VIP:80 -s rr`` lines (``ipvsadm -R``)."""
        lines = [ln.strip() for ln in rules.strip().splitlines() if ln.strip()]
        self.run("-R", input="\n".join(lines) + "\n")

    def __call__(self, stats: bool = False) -> Table:
        table = parse_list(self.run("-Ln"))
        if stats:
            merge_stats(table, parse_stats(self.run("-Ln", "--stats", "--exact")))
        return table

    def clear(self) -> None:
        self.run("-C")
