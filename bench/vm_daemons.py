"""(1)-(3) inside the test VM: healthd and keepalived on the same kernel, boot and backends.

Runs as root in the guest (bench/run-vm boots it).  For each daemon, check type and N, one
after the other on the same boot:

* real servers: one tcp-sink process (bench/tcp-sink.c) listening on 10.200.0.1:20000.. (a dummy
  interface), one port per real server; "killing" one closes its listening socket (RST);
* the daemon owns virtual server TCP 10.99.0.1:80 (wrr, NAT, inhibit on failure), equivalent
  settings (bench/configs.py);
* startup: until every destination is in the table with weight 1;
* CPU: user+sys of the daemon's processes (keepalived: parent and checker; healthd: all of its
  processes) over a window after a warm-up, from /proc/PID/stat; checks done = Tcp PassiveOpens
  of the guest over the same window (the sink is the only listener);
* detection: kill a backend, poll the table (raw genl dump) until its weight is 0; revive it,
  poll until its weight is back; a few victims in flight at once, new one every second;
* memory: VmHWM (peak RSS) of each process at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    CpuWindow,
    Sink,
    children_of,
    conditions,
    counters_change,
    cpu_seconds,
    log,
    machine_busy_seconds,
    net_counters,
    rollup_kb,
    status_kb,
    stop_process,
    summary,
    tcp_counter,
    write_json,
)
from configs import VIP, healthd_config, keepalived_config, split, vport_of
from ipvswatch import IpvsWatch, check

RS_ADDR = "10.200.0.1"
BASE = 20000


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def setup_guest(netdev_max_backlog: int | None) -> None:
    subprocess.run(["ip", "link", "del", "rsnet"], capture_output=True)
    sh("ip", "link", "add", "rsnet", "type", "dummy")
    sh("ip", "addr", "add", f"{RS_ADDR}/32", "dev", "rsnet")
    sh("ip", "link", "set", "rsnet", "up")
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("32768 65000\n")
    Path("/proc/sys/net/ipv4/tcp_tw_reuse").write_text("1\n")
    Path("/proc/sys/net/core/somaxconn").write_text("4096\n")
    if netdev_max_backlog is not None:  # the per-CPU input queue loopback delivers through
        Path("/proc/sys/net/core/netdev_max_backlog").write_text(f"{netdev_max_backlog}\n")


class Daemon:
    """keepalived --check, or healthd run: started, its PIDs, stopped."""

    def __init__(self, kind: str, check_type: str, n: int, work: Path, args: Any) -> None:
        self.kind = kind
        self.events_path: Path | None = None
        # "healthd:2": probes.workers 2, "healthd:auto": auto; "healthd" and "healthd-pyroute2"
        # one process (workers 0, as before auto existed); "healthd-defaults": nothing set;
        # "healthd-threadsK": as healthd-defaults, but one process, the engine in K threads
        kind, _, workers = kind.partition(":")
        threads = int(kind[len("healthd-threads") :]) if kind.startswith("healthd-threads") else 0
        self.log_path = work / f"{kind}{workers}-{check_type}-{n}.log"
        self.log = self.log_path.open("w")
        if kind == "keepalived":
            conf = keepalived_config(
                work / "keepalived.conf",
                addr=RS_ADDR,
                base=BASE,
                n=n,
                check=check_type,
                per_vs=args.per_vs,
            )
            argv = [
                "keepalived", "--check", "--dont-fork", "--log-console", "--no-syslog",
                "--dont-respawn", "-f", str(conf), "-p", str(work / "keepalived.pid"),
                "-c", str(work / "checkers.pid"),
            ]  # fmt: skip
        else:
            self.events_path = work / "events.jsonl"
            self.events_path.unlink(missing_ok=True)
            conf = healthd_config(
                work / "healthd.yaml",
                addr=RS_ADDR,
                base=BASE,
                n=n,
                check=check_type,
                workdir=work,
                workers=0 if threads else self.workers(kind, workers, args),
                engine_threads=threads,
                netlink="raw" if kind == "healthd" else "pyroute2",
                events_file=self.events_path,
                tcp_close=args.tcp_close,
                per_vs=args.per_vs,
            )
            argv = [args.python, "-m", "healthd", "run", "-c", str(conf)]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    @staticmethod
    def workers(kind: str, workers: str, args: Any) -> int | str | None:
        if kind == "healthd-defaults":
            return None
        if workers:
            return workers if workers == "auto" else int(workers)
        return 0 if args.workers is None else args.workers

    @property
    def auto(self) -> bool:
        """probes.workers: auto: the probes may move to workers 30 s after the start."""
        return self.kind in ("healthd:auto", "healthd-defaults")

    def moves(self) -> list[str]:
        """Every line where probes.workers: auto moved the probes (to one worker, then more; or
        the C engine's checks to threads, probes.engine_threads: auto)."""
        self.log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        marks = ("(probes.workers: auto;", "(probes.engine_threads: auto;")
        return [line for line in lines if any(mark in line for mark in marks)]

    def moved(self) -> str | None:
        """The line where probes.workers: auto first moved the probes, if it did."""
        moves = self.moves()
        return moves[0] if moves else None

    def wait_moved(self, limit_s: float) -> float | None:
        """Seconds from the start until probes.workers: auto moved the probes (None: it did
        not within ``limit_s`` of the start, the config did not need it)."""
        while True:  # looks at least once: a slow start may already be past the limit
            if self.moved():
                return time.monotonic() - self.started
            if time.monotonic() - self.started >= limit_s:
                return None
            time.sleep(0.5)

    def pids(self) -> list[int]:
        return [self.proc.pid, *children_of(self.proc.pid)]

    def stop(self, keep_in: Path | None = None) -> None:
        stop_process(self.proc, wait_s=60)
        self.log.close()
        if keep_in is not None:  # the guest's /tmp goes with the VM: keep the log with the JSON
            shutil.copy(self.log_path, keep_in / self.log_path.name)


class RssSampler:
    """The main process's VmRSS every half second from the start: when the peak comes (start-up,
    the table's build, the steady state) and what it is then."""

    def __init__(self, pid: int, started: float) -> None:
        self.samples: list[tuple[float, int]] = []
        self._pid, self._started = pid, started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss = status_kb(self._pid, "VmRSS")
            if rss:
                self.samples.append((round(time.monotonic() - self._started, 1), rss))

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        if not self.samples:
            return {}
        peak_at, peak = max(self.samples, key=lambda s: s[1])
        return {"peak_kb": peak, "peak_at_s": peak_at, "last_kb": self.samples[-1][1],
                "series": self.samples[::4]}  # fmt: skip


def wait_populated(
    watch: IpvsWatch, daemon: Daemon, n: int, vports: list[int], limit_s: float
) -> float | None:
    """Seconds from the daemon's start until all N destinations are in with weight > 0."""
    deadline = daemon.started + limit_s
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"{daemon.kind} exited: see {daemon.log_path}")
        counts = [watch.weight_counts(VIP, vport) for vport in vports]
        total, up = sum(c[0] for c in counts), sum(c[1] for c in counts)
        if total == n and up == n:
            return time.monotonic() - daemon.started
        time.sleep(0.2)
    return None


def detection(
    watch: IpvsWatch,
    sink: Sink,
    n: int,
    per_vs: int | None,
    kills: int,
    limit_s: float,
    rng: random.Random,
) -> dict[str, Any]:
    """Kill ``kills`` backends (at most 3 at a time, one more per second); time down and up.
    Each poll dumps the virtual servers of the backends in flight (with ``per_vs``, only
    those: the witness's CPU is the daemons' loss)."""
    pending: dict[int, dict[str, float]] = {}  # port -> {"kill": t, "down": t, "revive": t}
    down: list[float] = []
    up: list[float] = []
    victims_wall: list[dict[str, Any]] = []  # wall clock, to match the daemon's event log
    polls = 0
    started = time.monotonic()
    next_kill = started
    # Only real servers that are in the table with a weight count (a daemon that fell behind
    # at startup may not have added them all).
    weights: dict[int, int] = {}
    for vport, _ in split(BASE, n, per_vs):
        weights.update(watch.weights(VIP, vport))
    candidates = [p for p in range(BASE, BASE + n) if weights.get(p, 0) > 0]
    victims = rng.sample(candidates, min(kills, len(candidates)))
    failures = 0
    # what the witness (this process: the dumps, in the kernel mostly) and the whole VM spend
    # meanwhile, and the checks done: the daemon's rate during the kills
    witness_cpu0, busy0 = time.process_time(), machine_busy_seconds()
    opens0 = tcp_counter("PassiveOpens")
    # where a check's packets may be lost, once a second: to match false timeouts with
    net0 = net_counters()
    net_series: list[dict[str, Any]] = []
    next_net = started
    while (victims or pending) and time.monotonic() - started < limit_s:
        now = time.monotonic()
        if now >= next_net:
            net_series.append({"t": time.time(), **counters_change(net0, net_counters())})
            next_net = now + 1.0
        if victims and len(pending) < 3 and now >= next_kill:
            port = victims.pop()
            sink.kill(port)
            pending[port] = {"kill": time.monotonic()}
            victims_wall.append({"port": port, "kill": time.time()})
            next_kill = now + 1.0
        vports = {vport_of(port, BASE, per_vs) for port in pending}
        blobs = {vport: b"".join(watch.dump_raw(VIP, vport)) for vport in vports}
        seen = time.monotonic()
        polls += 1
        for port, times in list(pending.items()):
            weight = watch.weight_of(blobs[vport_of(port, BASE, per_vs)], port)
            if "down" not in times:
                if weight is None or weight == 0:
                    times["down"] = seen
                    down.append(seen - times["kill"])
                    next(v for v in victims_wall if v["port"] == port)["seen"] = time.time()
                    sink.revive(port)
                    times["revive"] = time.monotonic()
            elif weight:
                up.append(seen - times["revive"])
                del pending[port]
        time.sleep(0.02)
    failures = len(pending) + len(victims)
    for port in pending:
        sink.revive(port)
    elapsed = time.monotonic() - started
    return {
        "witness_cpu_pct": 100 * (time.process_time() - witness_cpu0) / elapsed,
        "machine_cpu_pct": 100 * (machine_busy_seconds() - busy0) / elapsed,
        "checks_per_s": (tcp_counter("PassiveOpens") - opens0) / elapsed,
        "net": counters_change(net0, net_counters()),
        "net_series": net_series,
        "down_s": summary(down),
        "up_s": summary(up),
        "unfinished": failures,
        "poll_period_s": elapsed / max(polls, 1),
        "candidates": len(candidates),
        "victims": victims_wall,
    }


KILL_FAMILIES = (
    "healthd_reconcile_duration_seconds",
    "healthd_event_loop_lag_seconds",
    "healthd_check_schedule_delay_seconds",
)


def histograms(port: int = 9540) -> dict[str, dict[str, float]]:
    """healthd's own histograms of interest (cumulative bucket counts, sum, count) from
    /metrics: read before and after the kills, their difference is what the kills cost."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        for family in KILL_FAMILIES:
            if not line.startswith(family + "_"):
                continue
            name, _, value = line.rpartition(" ")
            le = re.search(r'le="([^"]+)"', name)
            if "{" in name and not le:
                continue  # labelled by something else (an operation): not these
            part = le.group(1) if le else name[len(family) + 1 :]
            out.setdefault(family, {})[part] = float(value)
    return out


def histogram_change(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """Per family: how many, the mean, and the share above 0.1 s and 1 s, over the kills."""
    out: dict[str, Any] = {}
    for family, now in after.items():
        was = before.get(family, {})
        count = now.get("count", 0) - was.get("count", 0)
        total = now.get("sum", 0) - was.get("sum", 0)
        change: dict[str, Any] = {"count": count, "mean_s": total / count if count else None}
        bounds = {float(k): k for k in now if k not in ("count", "sum", "created", "+Inf")}
        for bound in (0.1, 1.0):
            if bound in bounds:
                under = now[bounds[bound]] - was.get(bounds[bound], 0)
                change[f"over_{bound:g}s"] = (count - under) / count if count else None
        out[family] = change
    return out


def stamp(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def down_path(events: Path, victims: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a detection's time went, from healthd's event log: from the kill to the verdict
    (the real server's state change to down, two failed checks with fall 2), and from the
    verdict to the kernel's acknowledgement of weight 0 (``kernel_op``, written after it)."""
    verdicts: dict[int, list[float]] = {}
    acks: dict[int, list[float]] = {}
    for line in events.read_text(errors="replace").splitlines():
        event = json.loads(line)
        port_of = re.search(r":(\d+)$", str(event.get("real_server") or ""))
        port = int(port_of.group(1)) if port_of else None
        verdict = event["event"] == "state_change" and event.get("check") is None
        if verdict and event["to"] == "down":
            name = re.search(r"rs(\d+)", str(event.get("real_server")))
            if name:
                verdicts.setdefault(int(name.group(1)), []).append(stamp(event["ts"]))
        elif event["event"] == "kernel_op" and event.get("weight") == 0 and port is not None:
            acks.setdefault(port, []).append(stamp(event["ts"]))
    to_verdict: list[float] = []
    to_kernel: list[float] = []
    kernel_to_seen: list[float] = []
    for victim in victims:
        if "seen" not in victim:
            continue
        verdict = next((t for t in verdicts.get(victim["port"], []) if t >= victim["kill"]), None)
        ack = next((t for t in acks.get(victim["port"], []) if t >= victim["kill"]), None)
        if verdict is None or ack is None:
            continue
        to_verdict.append(verdict - victim["kill"])
        to_kernel.append(ack - verdict)
        kernel_to_seen.append(victim["seen"] - ack)
    killed = {victim["port"] for victim in victims}
    false_downs = sorted(t for port, ts in verdicts.items() if port not in killed for t in ts)
    return {
        "false_downs": len(false_downs),
        "false_down_times": false_downs,
        "kill_to_verdict_s": summary(to_verdict),
        "verdict_to_kernel_s": summary(to_kernel),
        "kernel_to_seen_s": summary(kernel_to_seen),
    }


def cpu_window(daemon: Daemon, sink: Sink, window_s: float) -> tuple[list[int], dict[str, Any]]:
    """The daemon's processes, and their CPU and checks over ``window_s``."""
    pids = daemon.pids()
    sink_cpu0 = cpu_seconds(sink.pid)
    window = CpuWindow(pids)
    time.sleep(window_s)
    out = window.finish()
    out["sink_cpu_pct"] = 100 * (cpu_seconds(sink.pid) - sink_cpu0) / out["wall_s"]
    return pids, out


def run_case(
    kind: str, check_type: str, n: int, args: Any, work: Path, watch: IpvsWatch, sink_bin: Path
) -> dict[str, Any]:
    subprocess.run(["ipvsadm", "-C"], check=True)
    sink = Sink(sink_bin, RS_ADDR, BASE, n, check_type, work)
    daemon = Daemon(kind, check_type, n, work, args)
    out: dict[str, Any] = {"daemon": kind, "check": check_type, "n": n, "per_vs": args.per_vs}
    sampler = RssSampler(daemon.proc.pid, daemon.started)
    net0 = net_counters()
    try:
        vports = [vport for vport, _ in split(BASE, n, args.per_vs)]
        out["startup_s"] = wait_populated(watch, daemon, n, vports, args.startup_limit)
        if out["startup_s"] is None:
            log(f"  {kind} never had all {n} destinations up; measuring anyway")
        elif n <= 2000:
            check(watch, VIP, vports, sh("ipvsadm", "-Ln"))
        if daemon.auto:  # past the move to workers, or the windows that would have made it
            out["moved_after_s"] = daemon.wait_moved(args.auto_limit)
            if out["moved_after_s"] is not None:
                time.sleep(args.settle)  # the worker's Python start, and a second move if any
        time.sleep(args.warmup)
        moves = daemon.moves()
        pids, out["window"] = cpu_window(daemon, sink, args.window)
        if daemon.moves() != moves:  # the window saw a handover, the new workers uncounted
            log(f"  {kind}: the probes moved during the window; measuring again after it settles")
            out["handover_window"] = out["window"]
            time.sleep(args.settle)
            pids, out["window"] = cpu_window(daemon, sink, args.window)
        out["processes"] = len(pids)
        out["moved"] = daemon.moved()
        out["moves"] = daemon.moves()
        out["rss_kb"] = sum(status_kb(p, "VmRSS") for p in daemon.pids())
        if args.profile and kind.startswith("healthd"):  # after the window: py-spy costs CPU too
            for pid in pids if not args.profile_kills else pids[:1]:
                raw = args.json.parent / f"pyspy-{check_type}-{n}-{pid}.txt"
                subprocess.Popen(
                    [args.profile, "record", "-p", str(pid), "-d", "30" if args.profile_kills
                     else "15", "-r", "50", "-f", "raw", "-o", str(raw), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            if not args.profile_kills:
                time.sleep(20)
        if args.kills:
            before = histograms() if daemon.events_path is not None else {}
            out["detection"] = detection(
                watch, sink, n, args.per_vs, args.kills, args.detect_limit, random.Random(n)
            )
            if before:
                out["during_kills"] = histogram_change(before, histograms())
            if daemon.events_path is not None and daemon.events_path.exists():
                out["down_path"] = down_path(daemon.events_path, out["detection"]["victims"])
        out["net"] = counters_change(net0, net_counters())
        out["main_rss_kb"] = sampler.finish()
        out["peak_rss_kb"] = {str(p): status_kb(p, "VmHWM") for p in daemon.pids()}
        out["peak_rss_total_kb"] = sum(out["peak_rss_kb"].values())
        # what the processes hold now, shared pages (the interpreter, libraries) counted once
        out["pss_kb"] = {str(p): rollup_kb(p, "Pss") for p in daemon.pids()}
        out["pss_total_kb"] = sum(out["pss_kb"].values())
        out["rss_now_total_kb"] = sum(status_kb(p, "VmRSS") for p in daemon.pids())
        out["scheduled_per_s"] = n / 1.0
    finally:
        sampler.finish()
        try:
            daemon.stop(keep_in=args.json.parent)
        finally:  # never leave the sink holding its ports for the next case
            sink.close()
            subprocess.run(["ipvsadm", "-C"], check=False)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--daemons",
        nargs="+",
        default=["keepalived", "healthd", "healthd:auto", "healthd:2", "healthd-defaults"],
        help="keepalived; healthd (raw netlink, probes in one process), healthd:W (probes.workers"
        " W: a number or auto); healthd-pyroute2 (reconcile.netlink: pyroute2, one process);"
        " healthd-defaults (nothing set: pyroute2, workers auto); healthd-threadsK (as"
        " healthd-defaults, but probes.workers 0 and probes.engine_threads K)",
    )
    parser.add_argument("--checks", nargs="+", default=["tcp", "http"])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--startup-limit", type=float, default=300.0)
    parser.add_argument(
        "--auto-limit",
        type=float,
        default=75.0,
        help="probes.workers auto: wait this long after the start for the move to workers",
    )
    parser.add_argument("--detect-limit", type=float, default=240.0)
    parser.add_argument(
        "--workers", type=int, default=None, help="probes.workers for 'healthd' (default 0)"
    )
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--sink", type=Path, default=ROOT / "bench" / ".build" / "tcp-sink")
    parser.add_argument(
        "--settle", type=float, default=80.0,
        help="with probes.workers: auto, seconds from the first move to the window: the worker "
        "starts (~20 s in the TCG VM) and, if it falls behind, the probes move again (two 15 s "
        "windows) and the new workers start; the JSON's moves say what happened",
    )  # fmt: skip
    parser.add_argument("--profile", help="py-spy binary: profile healthd 15 s after the window")
    parser.add_argument(
        "--profile-kills", action="store_true",
        help="with --profile: the main process only, over the first 30 s of the kills (what a "
        "verdict costs on its way to the kernel; py-spy's CPU slows that detection)",
    )  # fmt: skip
    parser.add_argument(
        "--tcp-close",
        choices=["reset", "graceful"],
        help="TCP check close (default: graceful)",
    )
    parser.add_argument(
        "--netdev-max-backlog", type=int,
        help="set the guest's net.core.netdev_max_backlog (the kernel's default: 1000): the "
        "per-CPU input queue every packet between the daemons and the sink goes through",
    )  # fmt: skip
    parser.add_argument(
        "--real-servers-per-virtual-server", dest="per_vs", type=int,
        help="split the N real servers into virtual servers of this many (VIP:80, VIP:81, ...; "
        "default: all N in one); the witness then dumps only the virtual servers of the "
        "backends killed",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    if os.environ.get("HEALTHD_VM") != "1":
        print("vm_daemons.py runs inside the test VM (bench/run-all)", file=sys.stderr)
        return 2
    setup_guest(args.netdev_max_backlog)
    work = Path("/tmp/healthd-bench")
    work.mkdir(exist_ok=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)  # the daemons' logs are kept there
    watch = IpvsWatch()
    results: list[dict[str, Any]] = []
    backlog = int(Path("/proc/sys/net/core/netdev_max_backlog").read_text())
    data = {
        "conditions": conditions() | {"netdev_max_backlog": backlog},
        "args": vars(args) | {"json": str(args.json)},
    }
    data["args"]["sink"] = str(args.sink)
    for check_type in args.checks:
        for n in args.n:
            for kind in args.daemons:
                log(f"{kind} {check_type} N={n}")
                try:
                    result = run_case(kind, check_type, n, args, work, watch, args.sink)
                except Exception as exc:  # record it, go on with the next case
                    log(f"  failed: {exc!r}")
                    result = {"daemon": kind, "check": check_type, "n": n, "error": repr(exc)}
                results.append(result)
                write_json(args.json, data | {"runs": results})
                w = result.get("window")
                if w:
                    det = result.get("detection", {}).get("down_s", {})
                    log(
                        f"  startup {result['startup_s']}s, CPU {w['cpu_pct']:.1f}% "
                        f"(by process {list(w['cpu_pct_per_process'].values())}) "
                        f"{w['checks_per_s']:.0f} checks/s {w['cpu_ms_per_check']:.3f} ms/check, "
                        f"sink {w['sink_cpu_pct']:.1f}%, RSS {result['peak_rss_total_kb']} kB "
                        f"(now {result['rss_now_total_kb']}, PSS {result['pss_total_kb']}), "
                        f"down p50 {det.get('p50')} p99 {det.get('p99')}"
                    )
                    during = result.get("detection", {})
                    if "witness_cpu_pct" in during:
                        log(
                            f"  during the kills: {during['checks_per_s']:.0f} checks/s, the "
                            f"witness {during['witness_cpu_pct']:.0f}% of a vCPU, the VM "
                            f"{during['machine_cpu_pct']:.0f}% (of 200)"
                        )
                    if "net" in result:
                        false = result.get("down_path", {}).get("false_downs")
                        log(f"  packets lost over the case: {result['net']}; false downs {false}")
    watch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
