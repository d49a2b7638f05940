"""(2) on the host: detection and recovery latency of healthd's daemon, without IPVS.

Run as root; like host_rate.py it moves itself into a fresh network namespace (unshare) and runs
healthd's real daemon in this process, wired as ``healthd run --dry-run`` wires it (config file
-> open_port(dry_run=True) -> Daemon), against a tcp-sink with N ports on 127.0.0.1; the daemon
is pinned to one CPU, the sink to another.  Settings of bench/configs.py: interval 1 s, timeout
0.9 s, fall 2, rise 1, on_failure inhibit, every real server of weight 1.

The host has no IPVS, so the table is the dry-run table that open_port() returns.  It reaches the
daemon through a pass-through port (``RecordingPort``, an IpvsPort like the daemon's own
TimedPort) that takes ``time.monotonic()`` right after the dry-run table has applied an operation
on the real server under test: the instant the table shows it.  Nothing is polled.  A second
recorder (a wrapper on ``daemon.runtime.record``, set from here: healthd has no such hook) times
the victim's probe results and health verdicts, which splits each latency into its parts.

Per N: warm-up (every probe has run once, every real server is up in the table), then, one real
server at a time, spread over the N ports:

* kill its port (tcp-sink closes the listening socket: connects get an RST) and time until the
  table shows it with weight 0 (or removed: whichever on_failure gives): **detection**;
* revive it at once and time until the table shows its configured weight again: **recovery**;
* wait 0.2-1.2 s (seeded random), so kills fall at every phase of the victims' probe schedules.

The bound is fall x interval + timeout + 20 ms = 2.92 s.  Over the whole kill window, like
host_rate.py: CPU of the daemon's process(es), the exact schedule delays of every probe, and the
share of wall time the daemon was runnable but waiting for a CPU (other load on the box).

    .venv/bin/python bench/host_detect.py --check tcp --n 100 1000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    Sink,
    build_sink,
    children_of,
    conditions,
    cpu_seconds,
    log,
    percentile,
    summary,
    write_json,
)
from configs import healthd_config
from host_rate import BASE_PORT, enter_host_bench, record_delays

from healthd.ipvs.port import IpvsPort
from healthd.model import (
    AddRealServer,
    DeleteRealServer,
    DeleteVirtualServer,
    Desired,
    EditRealServer,
    Health,
    Observed,
    Op,
    VirtualServerKey,
)

INTERVAL_S = 1.0
TIMEOUT_S = 0.9
FALL = 2
RISE = 1
SLACK_S = 0.020  # what the bound allows for the reconcile pass
BOUND_S = FALL * INTERVAL_S + TIMEOUT_S + SLACK_S


# ---- recorders ----------------------------------------------------------------------------------


@dataclass
class Victim:
    """One kill: the real server's port and monotonic timestamps of what happened to it."""

    port: int
    phase: str = "down"  # "down": killed, until weight 0; "up": revived, until weight is back
    marks: dict[str, float] = field(default_factory=dict)
    down_as: str = ""  # "weight 0" or "removed"


class Recorder:
    """Timestamps for the one real server under test, taken where the events happen."""

    def __init__(self, vs: VirtualServerKey, configured: dict[int, int]) -> None:
        self.vs = vs
        self.configured = configured  # port -> configured weight
        self.victim: Victim | None = None
        self.reached: asyncio.Future[float] | None = None
        self.table_ops = 0

    def on_table(self, port: int, weight: int | None) -> None:
        """The dry-run table has just applied an operation on ``port`` (None: removed)."""
        self.table_ops += 1
        victim = self.victim
        if victim is None or port != victim.port:
            return
        now = time.monotonic()
        if victim.phase == "down" and not weight:
            victim.marks.setdefault("table_down", now)
            victim.down_as = "removed" if weight is None else "weight 0"
        elif victim.phase == "up" and weight == self.configured[port]:
            victim.marks.setdefault("table_up", now)
        else:
            return
        if self.reached is not None and not self.reached.done():
            self.reached.set_result(now)

    def on_probe(self, port: int, ok: bool, verdicts: Collection[Health]) -> None:
        """A probe of ``port`` has completed; ``verdicts``: the real server changes it caused."""
        victim = self.victim
        if victim is None or port != victim.port:
            return
        now = time.monotonic()
        if victim.phase == "down":
            if not ok:
                victim.marks.setdefault("probe_fail", now)
            if Health.DOWN in verdicts:
                victim.marks.setdefault("verdict_down", now)
        else:
            if ok:
                victim.marks.setdefault("probe_ok", now)
            if Health.UP in verdicts:
                victim.marks.setdefault("verdict_up", now)


class RecordingPort:
    """The dry-run table of open_port(), passed through; reports each real server operation to
    the recorder right after the table has applied it (an error leaves the table as it was)."""

    def __init__(self, inner: IpvsPort, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder

    async def dump(
        self, keys: Collection[VirtualServerKey], like: Desired | None = None
    ) -> Observed:
        return await self.inner.dump(keys, like)

    async def apply(self, op: Op) -> None:
        await self.inner.apply(op)
        vs = self.recorder.vs
        if isinstance(op, AddRealServer | EditRealServer) and op.virtual_server == vs:
            self.recorder.on_table(op.spec.key.port, op.spec.weight)
        elif isinstance(op, DeleteRealServer) and op.virtual_server == vs:
            self.recorder.on_table(op.key.port, None)
        elif isinstance(op, DeleteVirtualServer) and op.key == vs:
            for port in self.recorder.configured:
                self.recorder.on_table(port, None)

    async def close(self) -> None:
        await self.inner.close()


def hook_probe_results(daemon: Any, recorder: Recorder) -> bool:
    """Wrap ``daemon.runtime.record`` (probe result -> health book) on the instance: the
    victim's probe results and verdicts, timed.  False when healthd has changed shape."""
    runtime = getattr(daemon, "runtime", None)
    original = getattr(runtime, "record", None)
    if original is None:
        return False

    def record(key: Any, result: Any, *args: Any, **kwargs: Any) -> Any:
        outcome = original(key, result, *args, **kwargs)
        victim = recorder.victim
        if victim is not None and key.target.port == victim.port:
            changes = outcome.real_server_changes if outcome is not None else ()
            recorder.on_probe(victim.port, result.ok, [c.after.health for c in changes])
        return outcome

    runtime.record = record  # type: ignore[union-attr]
    return True


# ---- /proc ------------------------------------------------------------------------------------


def runqueue_wait_seconds(pid: int) -> float:
    """Time all threads of a process spent runnable but waiting for a CPU (schedstat field 2)."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


# ---- one N ------------------------------------------------------------------------------------


def victims_for(n: int, kills: int) -> list[int]:
    """``kills`` ports spread over the N: the middle of each of ``kills`` equal slices."""
    return [BASE_PORT + ((2 * i + 1) * n // (2 * kills)) % n for i in range(kills)]


async def wait_reached(recorder: Recorder, limit_s: float, action: Callable[[], None]) -> None:
    """Arm the recorder, do ``action`` (kill or revive), wait until the table shows the wanted
    weight or ``limit_s`` passes (the timestamp itself is the recorder's)."""
    recorder.reached = asyncio.get_running_loop().create_future()
    action()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            await recorder.reached
    recorder.reached = None


async def kill_once(recorder: Recorder, sink: Sink, port: int, limit_s: float) -> Victim:
    victim = Victim(port)
    recorder.victim = victim

    def kill() -> None:
        victim.marks["kill"] = time.monotonic()
        sink.kill(port)

    def revive() -> None:
        victim.marks["revive"] = time.monotonic()
        sink.revive(port)

    await wait_reached(recorder, limit_s, kill)
    victim.phase = "up"
    if "table_down" in victim.marks:
        await wait_reached(recorder, limit_s, revive)
    else:  # never seen down: nothing to time on the way back, let it settle
        revive()
        await asyncio.sleep(2 * INTERVAL_S)
    recorder.victim = None
    return victim


def spans(victim: Victim) -> dict[str, float | None]:
    """The victim's timestamps as durations (s); None where an event was not seen."""
    m = victim.marks

    def between(a: str, b: str) -> float | None:
        return m[b] - m[a] if a in m and b in m else None

    return {
        "down": between("kill", "table_down"),
        "down_first_fail": between("kill", "probe_fail"),
        "down_verdict": between("kill", "verdict_down"),
        "down_reconcile": between("verdict_down", "table_down"),
        "up": between("revive", "table_up"),
        "up_first_ok": between("revive", "probe_ok"),
        "up_verdict": between("revive", "verdict_up"),
        "up_reconcile": between("verdict_up", "table_up"),
    }


async def measure(conf: Path, *, n: int, args: argparse.Namespace, sink: Sink) -> dict[str, Any]:
    from healthd import config
    from healthd.daemon import Daemon, open_port

    cfg = config.load(str(conf))
    (vs_cfg,) = cfg.virtual_servers
    configured = {rs.port: rs.weight for rs in vs_cfg.real_servers}
    recorder = Recorder(vs_cfg.spec.key, configured)
    table = await open_port(cfg, dry_run=True)  # the dry-run table, as `healthd run --dry-run`
    daemon = Daemon(cfg, RecordingPort(table, recorder), dry_run=True)
    breakdown = hook_probe_results(daemon, recorder)
    delays = record_delays(daemon)
    run = asyncio.create_task(daemon.run())

    async def table_at_weight() -> int:
        """Real servers the dry-run table shows at their configured weight."""
        observed = await table.dump([vs_cfg.spec.key])
        vs = observed.get(vs_cfg.spec.key)
        if vs is None:
            return 0
        return sum(
            1 for key, rs in vs.real_servers.items() if configured.get(key.port) == rs.spec.weight
        )

    try:
        # warm-up: every probe has run once, every real server is up in the table
        deadline = time.monotonic() + args.startup_limit
        while time.monotonic() < deadline:
            if run.done():
                run.result()  # the daemon stopped: its exception
                raise RuntimeError("the daemon stopped during warm-up")
            if daemon.scheduler.completed >= n and await table_at_weight() == n:
                n_up = sum(1 for s in daemon.states().values() if s == "up")
                if n_up == n:
                    break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"not every real server up in the table in {args.startup_limit}s")
        warmed_s = args.startup_limit - (deadline - time.monotonic())
        await asyncio.sleep(args.warmup)
        gc.collect()

        rng = random.Random(n)
        victims = victims_for(n, args.kills)
        pids = [os.getpid(), *(p for p in children_of(os.getpid()) if p != sink.pid)]
        cpu0 = [cpu_seconds(p) for p in pids]
        wait0 = sum(runqueue_wait_seconds(p) for p in pids)
        load0 = os.getloadavg()
        delays.clear()
        done0, t0 = daemon.scheduler.completed, time.monotonic()
        results: list[Victim] = []
        for port in victims:
            if time.monotonic() - t0 > args.limit:
                log(f"  time limit {args.limit:.0f}s: {len(results)} of {len(victims)} kills")
                break
            victim = await kill_once(recorder, sink, port, args.kill_limit)
            results.append(victim)
            s = spans(victim)
            log(
                f"  kill {port}: down {fmt(s['down'])} (first failed probe "
                f"{fmt(s['down_first_fail'])}, verdict {fmt(s['down_verdict'])}, table "
                f"+{fmt(s['down_reconcile'], 'ms')}), up {fmt(s['up'])} (first good probe "
                f"{fmt(s['up_first_ok'])}, table +{fmt(s['up_reconcile'], 'ms')})"
            )
            await asyncio.sleep(0.2 + rng.random())
        done1, t1 = daemon.scheduler.completed, time.monotonic()
        per_process = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
        waited = sum(runqueue_wait_seconds(p) for p in pids) - wait0
        window = list(delays)
        at_weight_end = await table_at_weight()
    finally:
        daemon.stopping.set()
        await run

    wall, cpu = t1 - t0, sum(per_process)
    timings = [spans(v) for v in results]
    per_kill = [
        {"port": v.port, "down_as": v.down_as, **t} for v, t in zip(results, timings, strict=True)
    ]

    def column(name: str) -> list[float]:
        return [value for t in timings if (value := t[name]) is not None]

    down, up = column("down"), column("up")
    p99 = percentile(down, 99)
    unfinished = sum(1 for t in timings if t["down"] is None or t["up"] is None)
    return {
        "n": n,
        "kills": len(per_kill),
        "unfinished": unfinished,
        "down_s": summary(down),
        "up_s": summary(up),
        "breakdown_s": {
            name: summary(column(name))
            for name in (
                "down_first_fail",
                "down_verdict",
                "down_reconcile",
                "up_first_ok",
                "up_verdict",
                "up_reconcile",
            )
        }
        if breakdown
        else None,
        "per_kill": per_kill,
        "down_as": sorted({v.down_as for v in results if v.down_as}),
        "bound_s": BOUND_S,
        "within_bound": bool(down) and not unfinished and p99 <= BOUND_S,
        "over_bound": sum(1 for d in down if d > BOUND_S),
        "method": "timestamp at apply (dry-run table), no polling",
        "warmup_until_all_up_s": round(warmed_s, 2),
        "window_s": wall,
        "checks_per_s": (done1 - done0) / wall,
        "cpu_pct": 100.0 * cpu / wall,
        "cpu_pct_per_process": [round(100.0 * c / wall, 1) for c in per_process],
        "runqueue_wait_pct": 100.0 * waited / wall,
        "loadavg_before_after": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "delay_p50_ms": 1000 * percentile(window, 50),
        "delay_p99_ms": 1000 * percentile(window, 99),
        "delay_max_ms": 1000 * max(window, default=0.0),
        "delays_counted": len(window),
        "table_ops": recorder.table_ops,
        "at_configured_weight_after": at_weight_end,
    }


def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.1f} ms" if unit == "ms" else f"{value:.3f}s"


def run_one(args: argparse.Namespace, n: int, sink_bin: Path, work: Path) -> dict[str, Any]:
    conf = healthd_config(
        work / f"healthd-{n}.yaml",
        addr="127.0.0.1",
        base=BASE_PORT,
        n=n,
        check=args.check,
        workdir=work,
        interval_s=INTERVAL_S,
        timeout_s=TIMEOUT_S,
        fall=FALL,
        rise=RISE,
        max_concurrent=args.max_concurrent,
        metrics_port=9540,
        workers=args.workers,
    )
    sink = Sink(sink_bin, "127.0.0.1", BASE_PORT, n, args.check, work)
    try:
        os.sched_setaffinity(sink.pid, {args.sink_cpu})
        return asyncio.run(measure(conf, n=n, args=args, sink=sink))
    finally:
        sink.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", choices=["tcp", "http"], default="tcp")
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--kills", type=int, default=20, help="kills per N, one at a time")
    parser.add_argument("--limit", type=float, default=240.0, help="s of kills per N, at most")
    parser.add_argument("--kill-limit", type=float, default=30.0, help="s to wait per change")
    parser.add_argument("--warmup", type=float, default=3.0, help="s after every real server is up")
    parser.add_argument("--startup-limit", type=float, default=120.0)
    parser.add_argument("--max-concurrent", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=0, help="probes.workers (0: one process)")
    parser.add_argument("--cpu", type=int, default=1, help="the CPU healthd is pinned to")
    parser.add_argument("--sink-cpu", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    enter_host_bench(args.cpu)
    results: list[dict[str, Any]] = []
    out = {
        "conditions": conditions(),
        "check": args.check,
        "workers": args.workers or 0,
        "pinned_cpu": args.cpu,
        "settings": {"interval_s": INTERVAL_S, "timeout_s": TIMEOUT_S, "fall": FALL, "rise": RISE},
        "bound_s": BOUND_S,
        "runs": results,
    }
    failed = 0
    with tempfile.TemporaryDirectory(prefix="healthd-bench-") as tmp:
        work = Path(tmp)
        sink_bin = build_sink(ROOT / "bench" / ".build")
        for n in args.n:
            log(f"host detect: {args.check} N={n}, {args.kills} kills, bound {BOUND_S:.2f}s")
            try:
                result = run_one(args, n, sink_bin, work)
            except Exception as exc:  # one N that cannot run: report, go on
                log(f"  N={n} did not run: {exc!r}")
                failed += 1
                continue
            result["check"] = args.check
            results.append(result)
            if args.json:  # after every N: what ran is kept even if a later N fails
                write_json(args.json, out)
            d, u = result["down_s"], result["up_s"]
            log(
                f"  N={n}: down p50/p99/max {d['p50']:.3f}/{d['p99']:.3f}/{d['max']:.3f}s "
                f"({result['kills']} kills, {result['unfinished']} unfinished), "
                f"within {BOUND_S:.2f}s: {'yes' if result['within_bound'] else 'NO'}; "
                f"up p50/p99/max {u['p50']:.3f}/{u['p99']:.3f}/{u['max']:.3f}s; "
                f"CPU {result['cpu_pct']:.0f}%, delay p99 {result['delay_p99_ms']:.2f} ms, "
                f"runqueue wait {result['runqueue_wait_pct']:.1f}%"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
