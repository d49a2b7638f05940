"""(5) The most checks per second one core sustains with p99 schedule delay under 10 ms.

Run as root; it moves itself into a fresh network namespace (unshare), so its loopback, its
ports and its /proc/net/snmp counters are its own.  For each N it starts a tcp-sink with N ports
on 127.0.0.1, then runs healthd's real daemon in this process, exactly as ``healthd run
--dry-run`` wires it (config file -> Daemon -> scheduler, probes, health book, metrics,
reconciler on the dry-run table), pinned to one CPU.  The only addition is a recorder on the
scheduler's ``on_delay`` hook (one list append per probe), which gives the exact distribution
of schedule delays (actual start minus planned start) instead of histogram buckets.

With ``--scrape-every S``, a separate process (on the sink's CPU) reads ``/metrics`` every S
seconds during the window, as Prometheus would: the daemon renders the exposition on the same
event loop that runs the probes, so what a scrape does to the schedule shows in the delays.

Per N: warm-up, then a window: checks done (scheduler.completed), CPU time of this process
(user+sys from /proc/self/stat, so other engineers' load on the box does not count), and the
delays of the probes that started in the window.

    unshare -n .venv/bin/python bench/host_rate.py --check tcp --n 5000 10000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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
    machine_busy_seconds,
    percentile,
    raise_fd_limit,
    status_kb,
    write_json,
)
from configs import healthd_config

BASE_PORT = 10000
METRICS_PORT = 9540
SCRAPER = """
import socket, sys, time
every, until = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
request = b"GET /metrics HTTP/1.1\\r\\nHost: bench\\r\\nConnection: close\\r\\n\\r\\n"
walls, sizes = [], []
while time.monotonic() < until:  # bounded in time
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=30) as conn:
        conn.sendall(request)
        size = 0
        while chunk := conn.recv(1 << 20):  # read as Prometheus does: all of it, no parsing
            size += len(chunk)
    walls.append(time.monotonic() - t0)
    sizes.append(size)
    time.sleep(max(0.0, every - walls[-1]))
print(len(walls), max(walls, default=0.0), min(sizes, default=0))
"""


def enter_netns() -> None:
    """Re-exec in a new network namespace with lo up (once)."""
    if os.environ.get("HEALTHD_BENCH_NETNS") == "1":
        return
    env = dict(os.environ, HEALTHD_BENCH_NETNS="1")
    argv = ["unshare", "--net", "--", sys.executable, *sys.argv]
    os.execvpe("unshare", argv, env)


def prepare_netns() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # ephemeral ports above the sink's ports
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("45000 65000\n")
    Path("/proc/sys/net/ipv4/tcp_tw_reuse").write_text("1\n")


def enter_host_bench(cpu: int | None = None) -> None:
    """What every host benchmark starts with: its own network namespace with lo up, a raised fd
    limit, this process pinned to ``cpu``, and healthd's log at warnings only."""
    enter_netns()
    prepare_netns()
    raise_fd_limit()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    import logging

    from healthd import logs

    logs.setup("warning")
    logging.getLogger("healthd").setLevel(logging.WARNING)


def record_delays(daemon: Any) -> list[float]:
    """Every probe's schedule delay from now on, in a list (one append per probe), next to the
    daemon's own observer of them."""
    from healthd.histogram import DELAY_BUCKETS_S
    from healthd.workers import WorkerPool

    delays: list[float] = []
    record = delays.append

    def bucketed(merge: Any) -> Any:
        """A bucketed observer (counts by DELAY_BUCKETS_S, how many, their sum) that also
        lists each delay as its bucket's upper bound (above the last bound: 2x the last bound),
        so the percentiles are bounds."""

        def on_delays(counts: Sequence[int], count: int, total_s: float) -> None:
            for bound, c in zip(DELAY_BUCKETS_S, counts, strict=True):
                delays.extend([bound] * c)
            delays.extend([2 * DELAY_BUCKETS_S[-1]] * (count - sum(counts)))
            merge(counts, count, total_s)

        return on_delays

    scheduler = daemon.scheduler
    if isinstance(scheduler, WorkerPool):  # workers send their delays bucketed
        scheduler._on_delays = bucketed(scheduler._on_delays)
        return delays
    if scheduler._quiet is not None:  # so are settled successes counted in the C engine
        import dataclasses

        quiet = scheduler._quiet
        scheduler._quiet = dataclasses.replace(quiet, delays=bucketed(quiet.delays))
    observe = scheduler._on_delay
    assert observe is not None

    def on_delay(delay: float) -> None:
        record(delay)
        observe(delay)

    scheduler._on_delay = on_delay
    return delays


def by_bucket(delays: Sequence[float]) -> dict[str, int]:
    from healthd.histogram import DELAY_BUCKETS_S

    bounds = [*DELAY_BUCKETS_S, float("inf")]
    counts = [0] * len(bounds)
    for d in delays:
        counts[next(i for i, b in enumerate(bounds) if d <= b)] += 1
    return {f"{1000 * b:g}": c for b, c in zip(bounds, counts, strict=True) if c}


async def measure(
    conf: Path,
    *,
    n: int,
    interval_s: float,
    warmup_s: float,
    window_s: float,
    uvloop_used: bool,
    sink_pid: int,
    scrape_every_s: float | None = None,
    scrape_cpu: int = 0,
) -> dict[str, Any]:
    from healthd import config
    from healthd.daemon import Daemon, open_port

    cfg = config.load(str(conf))
    port = await open_port(cfg, dry_run=True)
    daemon = Daemon(cfg, port, dry_run=True)
    delays = record_delays(daemon)
    run = asyncio.create_task(daemon.run())
    # the first interval staggers the first probes; wait until every probe has run once
    deadline = time.monotonic() + 60
    while daemon.scheduler.completed < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(warmup_s)
    gc.collect()
    daemon.scheduler.drain()  # settled successes counted in the C engine so far (Quiet)
    delays.clear()
    profiler = None
    if os.environ.get("HEALTHD_BENCH_CPROFILE"):  # where the time goes (slows everything down)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    pids = [os.getpid(), *(p for p in children_of(os.getpid()) if p != sink_pid)]
    cpu0 = [cpu_seconds(p) for p in pids]
    sink0, machine0 = cpu_seconds(sink_pid), machine_busy_seconds()
    scraper = None
    if scrape_every_s:  # not in pids: its CPU is not the daemon's
        scraper = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCRAPER, str(scrape_every_s), str(window_s), str(METRICS_PORT),
            stdout=subprocess.PIPE,
        )  # fmt: skip
        os.sched_setaffinity(scraper.pid, {scrape_cpu})
    done0, t0 = daemon.scheduler.completed, time.monotonic()
    await asyncio.sleep(window_s)
    # the counts of the window's quiet successes, a slice at a time as the daemon drains them (in
    # one go it held the loop ~50 ms at 18 000 checks, and the probes due then started late)
    for step in daemon.scheduler.drain_slices():
        await (asyncio.sleep(0) if step is None else step)
    done1, t1 = daemon.scheduler.completed, time.monotonic()
    window = list(delays)
    per_process = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
    sink_cpu, machine_cpu = cpu_seconds(sink_pid) - sink0, machine_busy_seconds() - machine0
    scrapes: dict[str, Any] = {}
    if scraper is not None:
        out, _ = await scraper.communicate()
        count, longest_s, smallest = out.split()
        scrapes = {
            "scrapes": int(count),
            "scrape_max_s": float(longest_s),
            "scrape_min_bytes": int(smallest),
        }
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ["HEALTHD_BENCH_CPROFILE"])
    states = daemon.states()
    daemon.stopping.set()
    await run
    wall, cpu, checks = t1 - t0, sum(per_process), done1 - done0
    return {
        "n": n,
        "scheduled_per_s": n / interval_s,
        "checks_per_s": checks / wall,
        "cpu_pct": 100.0 * cpu / wall,
        "cpu_pct_per_process": [round(100.0 * c / wall, 1) for c in per_process],
        "cpu_us_per_check": 1e6 * cpu / checks if checks else None,
        # the backends' share (loopback: part of a connection's teardown runs in whichever
        # process's context sends the packet that causes it) and the whole machine's
        "sink_cpu_us_per_check": 1e6 * sink_cpu / checks if checks else None,
        "machine_cpu_us_per_check": 1e6 * machine_cpu / checks if checks else None,
        "delay_p50_ms": 1000 * percentile(window, 50),
        "delay_p99_ms": 1000 * percentile(window, 99),
        "delay_max_ms": 1000 * max(window, default=0.0),
        "delays_counted": len(window),
        # how many starts were how late, by bucket (ms, the upper bound; exact delays rounded up)
        "delays_by_bucket_ms": by_bucket(window),
        "up": sum(1 for s in states.values() if s == "up"),
        "rss_kb": status_kb(os.getpid(), "VmRSS"),
        "uvloop": uvloop_used,
        "scrape_every_s": scrape_every_s,
        **scrapes,
    }


def run_one(args: argparse.Namespace, n: int, sink_bin: Path, work: Path) -> dict[str, Any]:
    conf = healthd_config(
        work / f"healthd-{n}.yaml",
        addr="127.0.0.1",
        base=BASE_PORT,
        n=n,
        check=args.check,
        workdir=work,
        interval_s=args.interval,
        timeout_s=min(0.9, args.interval * 0.9),
        max_concurrent=args.max_concurrent,
        metrics_port=METRICS_PORT,
        workers=args.workers,
        tcp_close=args.tcp_close,
    )
    sink = Sink(sink_bin, "127.0.0.1", BASE_PORT, n, args.check, work)
    try:
        os.sched_setaffinity(sink.pid, {args.sink_cpu})
        loop_factory = None  # asyncio's, as the daemon runs
        uvloop_used = args.loop == "uvloop"
        if uvloop_used:
            import uvloop  # measured: no gain over asyncio here (docs/benchmarks.md)

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(
                measure(
                    conf,
                    n=n,
                    interval_s=args.interval,
                    warmup_s=args.warmup,
                    window_s=args.window,
                    uvloop_used=uvloop_used,
                    sink_pid=sink.pid,
                    scrape_every_s=args.scrape_every,
                    scrape_cpu=args.sink_cpu,
                )
            )
    finally:
        sink.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", choices=["tcp", "http"], default="tcp")
    parser.add_argument("--n", type=int, nargs="+", default=[5000, 10000, 15000, 20000])
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--max-concurrent", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=0, help="probes.workers (0: one process)")
    parser.add_argument("--cpu", type=int, default=1, help="the CPU healthd is pinned to")
    parser.add_argument("--sink-cpu", type=int, default=0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument(
        "--tcp-close",
        choices=["reset", "graceful"],
        help="TCP check close (default: graceful)",
    )
    parser.add_argument("--stop-when-missed", action="store_true")
    parser.add_argument(
        "--scrape-every", type=float, help="seconds: read /metrics this often during the window"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    enter_host_bench(args.cpu)
    results: list[dict[str, Any]] = []
    out = {
        "conditions": conditions(),
        "check": args.check,
        "workers": args.workers or 0,
        "pinned_cpu": args.cpu,
        "runs": results,
    }
    failed = 0
    with tempfile.TemporaryDirectory(prefix="healthd-bench-") as tmp:
        work = Path(tmp)
        sink_bin = build_sink(ROOT / "bench" / ".build")
        for n in args.n:
            log(f"host rate: {args.check} N={n} interval={args.interval}s")
            try:
                result = run_one(args, n, sink_bin, work)
            except Exception as exc:  # one N that cannot run (fd limit): report, go on
                log(f"  N={n} did not run: {exc}")
                failed += 1
                continue
            result["check"] = args.check
            results.append(result)
            if args.json:  # after every N: what ran is kept even if a later N fails
                write_json(args.json, out)
            log(
                "  {checks_per_s:.0f} checks/s (scheduled {scheduled_per_s:.0f}), "
                "CPU {cpu_pct:.0f}%, {cpu_us_per_check:.1f} us/check (backends "
                "{sink_cpu_us_per_check:.1f}, machine {machine_cpu_us_per_check:.1f}), delay p50 "
                "{delay_p50_ms:.2f} ms p99 {delay_p99_ms:.2f} ms, up {up}, per process "
                "{cpu_pct_per_process}".format(**result)
                + (
                    ", {scrapes} scrapes (longest {scrape_max_s:.3f} s)".format(**result)
                    if args.scrape_every
                    else ""
                )
            )
            if args.stop_when_missed and result["delay_p99_ms"] >= 10.0:
                break
    if failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
