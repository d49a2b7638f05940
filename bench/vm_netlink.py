"""(4) inside the test VM: healthd's netlink path against ``ipvsadm -R``, same rules.

One virtual server (TCP 10.99.0.1:80, wrr) and N destinations 10.200.0.1:20000.., NAT, weight 1.

* build: the table from empty (virtual server + N destinations);
* weights: N weight changes (1 -> 0);
* dump (healthd's adapters): one read of the N destinations, as each reconcile pass starts with
  (``dump``: the first after a change, every destination decoded; ``dump_unchanged``: the same
  table again, decoded ones reused); its "ops" are the destinations read.

``healthd-adapter`` is the adapter alone (one awaited request per destination, no reconciler),
to tell the cost of the netlink path from the cost of a reconcile pass around it.

healthd is measured on its real path: a ``Reconciler`` pass (dump, plan, apply one request at a
time, dump again) over the adapter the daemon uses (``healthd.ipvs.genl``), with a desired table
of N destinations (the policy is left out: it is not netlink).  ``--pyroute2 M`` adds the
pyroute2 adapter on M destinations (a smaller table: it was ~20x slower before session 6).
``ipvsadm -R`` gets the same rules as ``-A``/``-a`` (build) or ``-e`` (weights) lines on stdin.
CPU is process time (user+sys; for ipvsadm, of the child), wall time is also given; the table
is checked after every step and cleared between methods.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import conditions, log, write_json
from configs import VIP, VPORT
from ipvswatch import IpvsWatch

from healthd.ipvs.port import IpvsPort
from healthd.model import (
    AddRealServer,
    AddVirtualServer,
    DesiredRealServer,
    DesiredVirtualServer,
    EditRealServer,
    Forwarding,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServerKey,
    VirtualServerSpec,
)
from healthd.reconciler import Reconciler

RS_ADDR = "10.200.0.1"
BASE = 20000
VS_KEY = VirtualServerKey.for_address(Protocol.TCP, VIP, VPORT)


def desired(n: int, weight: int) -> dict[VirtualServerKey, DesiredVirtualServer]:
    real_servers = {
        RealServerKey(RS_ADDR, BASE + i): DesiredRealServer(
            RealServerSpec(RealServerKey(RS_ADDR, BASE + i), Forwarding.NAT, weight)
        )
        for i in range(n)
    }
    return {VS_KEY: DesiredVirtualServer(VirtualServerSpec(VS_KEY, "wrr"), real_servers)}


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def clear() -> None:
    subprocess.run(["ipvsadm", "-C"], check=True)


def check_table(watch: IpvsWatch, n: int, weight: int) -> None:
    weights = watch.weights(VIP, VPORT)
    assert len(weights) == n and set(weights.values()) == {weight}, (len(weights), weight)


async def healthd_pass(port: IpvsPort, want: Any) -> dict[str, float]:
    reconciler = Reconciler(port=port, desired=lambda: want, op_timeout_s=60)
    c0, t0 = cpu(), time.monotonic()
    result = await reconciler.reconcile_once()
    c1, t1 = cpu(), time.monotonic()
    assert result.ok, result.failed[:3]
    return {"cpu_s": c1 - c0, "wall_s": t1 - t0, "ops": len(result.applied)}


async def adapter_only(port: IpvsPort, want: Any, add: bool) -> dict[str, float]:
    """The adapter alone: one awaited request per destination, no reconciler around it."""
    vs = want[VS_KEY]
    ops: list[Any] = [AddVirtualServer(vs.spec)] if add else []
    kind = AddRealServer if add else EditRealServer
    ops += [kind(VS_KEY, d.spec) for d in vs.real_servers.values()]
    c0, t0 = cpu(), time.monotonic()
    for op in ops:
        await port.apply(op)
    return {"cpu_s": cpu() - c0, "wall_s": time.monotonic() - t0, "ops": len(ops)}


async def run_adapter(n: int, watch: IpvsWatch) -> dict[str, Any]:
    from healthd.ipvs.genl import GenlIpvs

    port = await GenlIpvs.open()
    try:
        clear()
        build = await adapter_only(port, desired(n, 1), add=True)
        check_table(watch, n, 1)
        weights = await adapter_only(port, desired(n, 0), add=False)
        check_table(watch, n, 0)
    finally:
        await port.close()
        clear()
    return {"build": build, "weights": weights}


async def dump_only(port: IpvsPort) -> dict[str, float]:
    """One read of the table (what every reconcile pass starts with)."""
    c0, t0 = cpu(), time.monotonic()
    observed = await port.dump({VS_KEY})
    return {
        "cpu_s": cpu() - c0,
        "wall_s": time.monotonic() - t0,
        "ops": len(observed[VS_KEY].real_servers),
    }


async def run_healthd(adapter: str, n: int, watch: IpvsWatch) -> dict[str, Any]:
    if adapter == "genl":
        from healthd.ipvs.genl import GenlIpvs

        port: IpvsPort = await GenlIpvs.open()
    else:
        from healthd.ipvs.netlink import NetlinkIpvs

        port = await NetlinkIpvs.open()
    try:
        clear()
        build = await healthd_pass(port, desired(n, 1))
        check_table(watch, n, 1)
        weights = await healthd_pass(port, desired(n, 0))
        check_table(watch, n, 0)
        # a dump of the whole table: the first after a change decodes every real server, an
        # unchanged one (idle backends: same counters) reuses the last dump's decoding
        dump_changed = await dump_only(port)
        dump_same = await dump_only(port)
    finally:
        await port.close()
        clear()
    return {"build": build, "weights": weights, "dump": dump_changed, "dump_unchanged": dump_same}


def ipvsadm_restore(lines: list[str]) -> dict[str, float]:
    c0, t0 = child_cpu(), time.monotonic()
    subprocess.run(["ipvsadm", "-R"], input="\n".join(lines) + "\n", text=True, check=True)
    return {"cpu_s": child_cpu() - c0, "wall_s": time.monotonic() - t0, "ops": len(lines)}


def run_ipvsadm(n: int, watch: IpvsWatch) -> dict[str, Any]:
    clear()
    vs = f"-t {VIP}:{VPORT}"
    build_lines = [f"-A {vs} -s wrr"]
    build_lines += [f"-a {vs} -r {RS_ADDR}:{BASE + i} -m -w 1" for i in range(n)]
    build = ipvsadm_restore(build_lines)
    check_table(watch, n, 1)
    weights = ipvsadm_restore([f"-e {vs} -r {RS_ADDR}:{BASE + i} -m -w 0" for i in range(n)])
    check_table(watch, n, 0)
    clear()
    return {"build": build, "weights": weights}


def per_op(result: dict[str, Any]) -> str:
    return ", ".join(
        f"{step} {1000 * r['cpu_s'] / max(r['ops'], 1):.3f} ms CPU/op "
        f"({r['cpu_s']:.2f} s CPU, {r['wall_s']:.2f} s wall, {r['ops']} ops)"
        for step, r in result.items()
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--pyroute2", type=int, default=0, help="also pyroute2 on this many")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    if os.environ.get("HEALTHD_VM") != "1":
        print("vm_netlink.py runs inside the test VM (bench/run-all)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, filename="/tmp/healthd-bench-netlink.log")
    watch = IpvsWatch()
    runs: list[dict[str, Any]] = []
    for attempt in range(args.repeat):
        for method in ("ipvsadm", "healthd", "healthd-adapter"):
            if method == "ipvsadm":
                result = run_ipvsadm(args.n, watch)
            elif method == "healthd":
                result = asyncio.run(run_healthd("genl", args.n, watch))
            else:
                result = asyncio.run(run_adapter(args.n, watch))
            runs.append({"method": method, "n": args.n, "attempt": attempt, **result})
            log(f"{method} N={args.n}: {per_op(result)}")
    if args.pyroute2:
        result = asyncio.run(run_healthd("pyroute2", args.pyroute2, watch))
        runs.append({"method": "healthd-pyroute2", "n": args.pyroute2, "attempt": 0, **result})
        log(f"healthd with pyroute2 N={args.pyroute2}: {per_op(result)}")
    write_json(args.json, {"conditions": conditions(), "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
