"""The floor under (5): what a TCP check costs with no checker at all, on one core of this host.

A plain loop does what healthd's TCP probe does per check (non-blocking socket, connect to a
loopback tcp-sink port, read the socket state, close) and nothing else: no scheduler, no health
state, no metrics.  Its user and system time per check is the least any Python checker can
spend here; the system part (the kernel's loopback handshake and teardown, both ends) is the
least any checker at all can spend.  Same namespace, pinning and sink as host_rate.py.

    .venv/bin/python bench/host_floor.py --n 1000 --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, Sink, build_sink, conditions, log, write_json
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
                rounds.append(
                    {
                        "checks": done,
                        "failed": failed,
                        "user_us_per_check": 1e6 * user / done,
                        "sys_us_per_check": 1e6 * system / done,
                        "cpu_us_per_check": 1e6 * (user + system) / done,
                    }
                )
                r = rounds[-1]
                log(
                    f"floor: {done} checks ({failed} failed): user {r['user_us_per_check']:.1f} us"
                    f" + sys {r['sys_us_per_check']:.1f} us = {r['cpu_us_per_check']:.1f} us"
                    f" per check, {1e6 / r['cpu_us_per_check']:.0f} checks/s per core at most"
                )
        finally:
            sink.close()
    if args.json:
        write_json(args.json, {"conditions": conditions(), "n": args.n, "rounds": rounds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
