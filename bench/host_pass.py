"""What one reconcile pass costs the daemon's main process at N real servers, by part, on the host.

A real ``Daemon`` (dry-run table) on a config of N real servers, every check settled up; then,
round after round, one real server's check fails twice (fall 2: it goes down) and one pass runs,
as in the test VM's detection benchmark.  Prints the CPU milliseconds per round of:

* ``desired``: the desired table computed again after the change;
* ``plan``: ``plan(desired, observed)`` over the whole table;
* ``read``: reading a kernel dump answer of N real servers (``ipvs/dumps.TableReader`` over the
  messages the kernel would send, encoded by pyroute2), all but one unchanged since the last read;
* ``pass``: the daemon's whole pass on the dry-run table (its read is a copy, not a dump).

The VM runs the same code 10-20x slower (TCG); what matters here is the ratio between parts and
between commits.

    .venv/bin/python bench/host_pass.py --n 5000 --rounds 50
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs import dry_run_daemon

from healthd.checkspec import ProbeResult, Reason


def encoded(cmd: int, attrs: list[tuple[str, Any]]) -> bytes:
    """A dump answer's message as the kernel would send it, encoded by pyroute2."""
    from pyroute2.netlink.generic import ipvs as genl_ipvs

    msg = genl_ipvs.ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def dest_message(port: int, weight: int) -> bytes:
    from healthd.ipvs import genl_codec as c

    attrs = [
        ("IPVS_DEST_ATTR_ADDR", "10.200.0.1"),
        ("IPVS_DEST_ATTR_PORT", port),
        ("IPVS_DEST_ATTR_FWD_METHOD", 0),
        ("IPVS_DEST_ATTR_WEIGHT", weight),
        ("IPVS_DEST_ATTR_U_THRESH", 0),
        ("IPVS_DEST_ATTR_L_THRESH", 0),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", 0),
        ("IPVS_DEST_ATTR_INACT_CONNS", 0),
        ("IPVS_DEST_ATTR_PERSIST_CONNS", 0),
        ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET),
    ]
    return encoded(c.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", {"attrs": attrs})])


def dump_messages(n: int) -> tuple[bytes, list[bytes]]:
    """The kernel's dump answer for one virtual server of ``n`` real servers of weight 1."""
    from healthd.ipvs import genl_codec as c

    service = encoded(
        c.CMD_NEW_SERVICE,
        [
            (
                "IPVS_CMD_ATTR_SERVICE",
                {
                    "attrs": [
                        ("IPVS_SVC_ATTR_AF", socket.AF_INET),
                        ("IPVS_SVC_ATTR_PROTOCOL", socket.IPPROTO_TCP),
                        ("IPVS_SVC_ATTR_ADDR", "10.99.0.1"),
                        ("IPVS_SVC_ATTR_PORT", 80),
                        ("IPVS_SVC_ATTR_SCHED_NAME", "wrr"),
                        ("IPVS_SVC_ATTR_FLAGS", {"flags": 0, "mask": 0xFFFF}),
                    ]
                },
            )
        ],
    )
    return service, [dest_message(20000 + i, 1) for i in range(n)]


async def run(args: argparse.Namespace) -> None:
    from healthd.ipvs import genl_codec as c
    from healthd.ipvs.dumps import TableReader
    from healthd.model import Protocol, VirtualServerKey
    from healthd.plan import plan

    logging.disable(logging.WARNING)
    parts: dict[str, list[float]] = {"desired": [], "plan": [], "read": [], "pass": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        daemon = dry_run_daemon(work, n=args.n, check="tcp", workers=0)
        ok = ProbeResult(True, Reason.OK, "connected", 0.0004)
        refused = ProbeResult(False, Reason.REFUSED, "connection refused", 0.0002)
        keys = list(daemon.book.probes)
        for key in keys:
            daemon.on_result(key, ok)
        await daemon.reconciler.reconcile_once()
        runtime = daemon.runtime

        service, dests = dump_messages(args.n)
        vs_key = VirtualServerKey.for_address(Protocol.TCP, "10.99.0.1", 80)

        async def request(cmd: int, attrs: bytes, what: str) -> list[bytes]:
            return [service] if cmd == c.CMD_GET_SERVICE else dests

        reader = TableReader()
        await reader.read([vs_key], request)
        for i in range(args.rounds):
            victim = keys[(i * 7919) % len(keys)]
            for _ in range(2):
                daemon.on_result(victim, refused)
            # the parts, each on its own
            now = time.time()
            t0 = time.process_time()
            desired = runtime.desired(now)
            t1 = time.process_time()
            plan(desired, daemon.reconciler.observed)
            t2 = time.process_time()
            index = (i * 7919) % args.n
            dests[index] = dest_message(20000 + index, 0)
            t3 = time.process_time()
            await reader.read([vs_key], request)
            t4 = time.process_time()
            # the whole pass (desired computed again: nothing changed since, so reused)
            await daemon.reconciler.reconcile_once()
            t5 = time.process_time()
            parts["desired"].append(t1 - t0)
            parts["plan"].append(t2 - t1)
            parts["read"].append(t4 - t3)
            parts["pass"].append(t5 - t4)
            for _ in range(2):
                daemon.on_result(victim, ok)
            await daemon.reconciler.reconcile_once()
    figures = {k: 1e3 * statistics.median(v) for k, v in parts.items()}
    print(
        f"n={args.n} rounds={args.rounds}: CPU ms per round (median): "
        + ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=50)
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
