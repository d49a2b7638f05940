"""Shared helpers for the benchmark scripts: /proc readings, the tcp-sink backends, statistics.

Stdlib only: the VM runs these with Debian's /usr/bin/python3 as well as with the project venv.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- /proc ------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc, by parent pid), ``pid`` excluded."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent on anything but idle and iowait (/proc/stat): the kernel's work
    done in interrupt context for whichever process was running is in it, wherever it landed."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's name (None: the process is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 when it is gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0


def minor_faults(pid: int) -> int:
    """Minor page faults of one process so far (pages it touched for the first time, or again
    after giving them back); 0 when it is gone."""
    fields = _stat(pid)
    return int(fields[7]) if fields else 0


def sched_cpu_seconds(pid: int) -> float:
    """On-CPU time of all threads of a process from /proc/PID/task/*/schedstat (nanoseconds,
    kept by the scheduler), a cross-check of the tick-sampled utime+stime; 0 when unavailable."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    except OSError:
        return 0.0
    return total / 1e9


def _kb_line(path: str, field: str) -> int:
    """The value of a ``Field:  N kB`` line of a /proc file, 0 when absent."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM), 0 when absent."""
    return _kb_line(f"/proc/{pid}/status", field)


def rollup_kb(pid: int, field: str) -> int:
    """A ``kB`` line of /proc/PID/smaps_rollup (Pss: the process's share of its resident pages,
    a page shared with N processes counted 1/N), 0 when absent."""
    return _kb_line(f"/proc/{pid}/smaps_rollup", field)


def tcp_counter(name: str) -> int:
    """A Tcp counter of /proc/net/snmp (this network namespace), e.g. PassiveOpens."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    heads = [ln for ln in lines if ln[0] == "Tcp:"]
    return int(heads[1][heads[0].index(name)])


NET_COUNTERS = (
    "ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPBacklogDrop", "TCPSynRetrans",
    "TCPTimeouts",
)  # fmt: skip


def net_counters() -> dict[str, int]:
    """Where packets of a check may be lost in this network namespace: the per-CPU input
    backlog's drops and squeezes (/proc/net/softnet_stat: loopback and the dummy interface
    deliver through it), a listener's full queues and SYNs sent again (/proc/net/netstat)."""
    out = {"softnet_dropped": 0, "softnet_squeezed": 0}
    for line in Path("/proc/net/softnet_stat").read_text().splitlines():
        cols = line.split()
        out["softnet_dropped"] += int(cols[1], 16)
        out["softnet_squeezed"] += int(cols[2], 16)
    lines = [ln.split() for ln in Path("/proc/net/netstat").read_text().splitlines()]
    heads = [ln for ln in lines if ln[0] == "TcpExt:"]
    values = dict(zip(heads[0][1:], heads[1][1:], strict=True))
    for name in NET_COUNTERS:
        out[name] = int(values.get(name, 0))
    out["RetransSegs"] = tcp_counter("RetransSegs")
    return out


def counters_change(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after}


class CpuWindow:
    """CPU time of a set of processes and PassiveOpens over a window of wall time."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.each0 = [cpu_seconds(p) for p in self.pids]
        self.cpu0 = sum(self.each0)
        self.sched0 = sum(sched_cpu_seconds(p) for p in self.pids)
        self.opens0 = tcp_counter("PassiveOpens")
        self.wall0 = time.monotonic()

    def finish(self) -> dict[str, Any]:
        each = [cpu_seconds(p) - c for p, c in zip(self.pids, self.each0, strict=True)]
        cpu = sum(each)
        sched = sum(sched_cpu_seconds(p) for p in self.pids) - self.sched0
        opens = tcp_counter("PassiveOpens") - self.opens0
        wall = time.monotonic() - self.wall0
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_pct": 100.0 * cpu / wall,
            # by pid, in the order given (a daemon's main process first)
            "cpu_pct_per_process": {
                str(p): round(100.0 * c / wall, 1) for p, c in zip(self.pids, each, strict=True)
            },
            "checks": opens,
            "checks_per_s": opens / wall,
            "cpu_ms_per_check": 1000.0 * cpu / opens if opens else math.nan,
            "sched_cpu_s": sched,
            "sched_ms_per_check": 1000.0 * sched / opens if opens else math.nan,
        }


# ---- the tcp-sink backends --------------------------------------------------------------------


def raise_fd_limit(wanted: int = 65536) -> None:
    """Room for one listening socket per real server (and the probes' sockets): root may raise
    its own hard limit; children (the sink, the daemon) inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))


def build_sink(out_dir: Path) -> Path:
    """Compile bench/tcp-sink.c into ``out_dir`` (when missing or older than its source)."""
    src = BENCH / "tcp-sink.c"
    binary = out_dir / "tcp-sink"
    if not binary.exists() or binary.stat().st_mtime < src.stat().st_mtime:
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(src)], check=True)
    return binary


class Sink:
    """N real servers on ADDR:BASE.. in one tcp-sink process; kill/revive one port at a time."""

    def __init__(
        self, binary: Path, addr: str, base: int, n: int, mode: str, workdir: Path
    ) -> None:
        self.addr, self.base, self.n = addr, base, n
        self.fifo = workdir / f"sink-{os.getpid()}-{base}.ctl"
        with contextlib.suppress(FileNotFoundError):
            self.fifo.unlink()
        os.mkfifo(self.fifo)
        self.proc = subprocess.Popen(
            [str(binary), addr, str(base), str(n), mode, str(self.fifo)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("tcp-sink did not start")
        self._ctl = os.open(self.fifo, os.O_WRONLY)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self, line: str) -> None:
        os.write(self._ctl, (line + "\n").encode())

    def kill(self, port: int) -> None:
        self.command(f"kill {port}")

    def revive(self, port: int) -> None:
        self.command(f"up {port}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.command("quit")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._ctl)
        with contextlib.suppress(FileNotFoundError):
            self.fifo.unlink()


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait_s: float = 20
) -> None:
    """Stop a process this script started (by its PID), then reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def started(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    try:
        yield proc
    finally:
        stop_process(proc)


# ---- statistics and output --------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
        "values": [round(v, 4) for v in values],
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def conditions() -> dict[str, Any]:
    """Where a result was measured."""
    uname = os.uname()
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "kernel": uname.release,
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": sys.version.split()[0],
        "vm": os.environ.get("HEALTHD_VM") == "1",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def print_profile(work: Callable[[], object], top: int = 25) -> None:
    """Run ``work`` once under cProfile and print the ``top`` functions by their own time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    work()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)
