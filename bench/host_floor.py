"""The floor under (5): what a TCP check costs with no checker at all, on one core of this host.

A plain loop does what healthd's TCP probe does per check (non-blocking socket, connect to a
loopback tcp-sink port, read the socket state, close) and nothing else: no scheduler, no health
state, no metrics.  Its user and system time per check is the least any Python checker can
spend here.  The same loop in C (``bench/tcp-floor.c``: the same system calls, no interpreter)
is the least any checker at all can spend: the kernel's loopback handshake and teardown.  Same
namespace, pinning and sink as host_rate.py.

    .venv/bin/python bench/host_floor.py --n 1000 --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, ROOT, Sink, build_sink, conditions, log, write_json
from host_rate import BASE_PORT, enter_host_bench

_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


def check(port: int) -> int:
    sock = socket.socket(socket.AF_INET, _STREAM)
    try:
        code = sock.connect_ex(("127.0.0.1", port))
        if code == errno.EINPROGRESS:
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return code
    finally:
        sock.close()


def build_floor(out_dir: Path) -> Path:
    src = BENCH / "tcp-floor.c"
    binary = out_dir / "tcp-floor"
    if not binary.exists() or binary.stat().st_mtime < src.stat().st_mtime:
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(src)], check=True)
    return binary


def round_figures(done: int, failed: int, user: float, system: float) -> dict[str, float]:
    return {
        "checks": done,
        "failed": failed,
        "user_us_per_check": 1e6 * user / done,
        "sys_us_per_check": 1e6 * system / done,
        "cpu_us_per_check": 1e6 * (user + system) / done,
    }


def log_round(what: str, r: dict[str, float]) -> None:
    log(
        f"floor ({what}): {r['checks']:.0f} checks ({r['failed']:.0f} failed): user"
        f" {r['user_us_per_check']:.1f} us + sys {r['sys_us_per_check']:.1f} us ="
        f" {r['cpu_us_per_check']:.1f} us per check,"
        f" {1e6 / r['cpu_us_per_check']:.0f} checks/s per core at most"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="sink ports, checked in turn")
    parser.add_argument("--seconds", type=float, default=3.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=1)
    parser.add_argument("--sink-cpu", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    enter_host_bench(args.cpu)
    rounds = []
    c_rounds = []
    floor_bin = build_floor(ROOT / "bench" / ".build")
    with tempfile.TemporaryDirectory(prefix="healthd-bench-") as tmp:
        sink = Sink(
            build_sink(ROOT / "bench" / ".build"), "127.0.0.1", BASE_PORT, args.n, "tcp", Path(tmp)
        )
        try:
            os.sched_setaffinity(sink.pid, {args.sink_cpu})
            for _ in range(args.rounds):
                before, start, done, failed = os.times(), time.monotonic(), 0, 0
                while time.monotonic() - start < args.seconds:  # bounded in time and count
                    for port in range(BASE_PORT, BASE_PORT + args.n):
                        failed += check(port) != 0
                        done += 1
                    time.sleep(0.05)  # let TIME_WAIT entries go (tcp_tw_reuse)
                after = os.times()
                user, system = after.user - before.user, after.system - before.system
                rounds.append(round_figures(done, failed, user, system))
                log_round("Python", rounds[-1])
            for _ in range(args.rounds):
                out = subprocess.run(
                    [str(floor_bin), "127.0.0.1", str(BASE_PORT), str(args.n), str(args.seconds)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                c_rounds.append(
                    round_figures(int(out[0]), int(out[1]), float(out[2]), float(out[3]))
                )
                log_round("C", c_rounds[-1])
        finally:
            sink.close()
    if args.json:
        write_json(
            args.json,
            {"conditions": conditions(), "n": args.n, "rounds": rounds, "c_rounds": c_rounds},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
