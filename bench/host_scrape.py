"""(6) /metrics scrape time at 10 000 real servers, on the host.

Moves itself into a fresh network namespace (unshare), starts a tcp-sink with N ports on
127.0.0.1 and ``healthd run --dry-run`` on a config with N real servers (TCP checks, interval
1 s, all of them up), waits until every probe has run, then scrapes /metrics ``--scrapes``
times, one after the other: wall time per scrape as the client sees it (request sent to last
byte read, and to the response's headers), the daemon's CPU time and minor page faults per
scrape, and the size of the answer.  ``--gzip`` asks for ``Accept-Encoding: gzip`` as
Prometheus does (the size is then what went over the wire).

    .venv/bin/python bench/host_scrape.py --n 10000 --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import socket
import subprocess
import sys
import tempfile
import time
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
    minor_faults,
    status_kb,
    stop_process,
    summary,
    write_json,
)
from configs import healthd_config
from host_rate import BASE_PORT, enter_host_bench

METRICS_PORT = 9541  # below the sink's ports (10000..)


def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    status, body, _, _ = timed_get(path, headers or {})
    return status, body


def timed_get(path: str, headers: dict[str, str]) -> tuple[int, bytes, str, float]:
    """Status, body, Content-Encoding, and the seconds until the response's headers arrived."""
    conn = http.client.HTTPConnection("127.0.0.1", METRICS_PORT, timeout=30)
    try:
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        first = time.perf_counter() - t0
        return response.status, response.read(), response.getheader("Content-Encoding", ""), first
    finally:
        conn.close()


def raw_get(path: str, headers: dict[str, str]) -> tuple[int, bytes, str, float]:
    """``timed_get`` by a client that reads the socket as fast as it delivers and parses nothing
    until the end (as Prometheus' Go client reads): an HTTP/1.0 request, so the body comes
    unchunked up to the connection's close."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.0\r\nHost: bench\r\n{extra}\r\n".encode()
    parts: list[bytes] = []
    with socket.create_connection(("127.0.0.1", METRICS_PORT), timeout=30) as conn:
        t0 = time.perf_counter()
        conn.sendall(request)
        first_part = conn.recv(1 << 20)
        first = time.perf_counter() - t0
        parts.append(first_part)
        while chunk := conn.recv(1 << 20):
            parts.append(chunk)
    data = b"".join(parts)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    encoding = next((v for k, v in fields.items() if k.lower() == "content-encoding"), "")
    return status, body, encoding, first


def workers_arg(value: str) -> int | str:
    return value if value == "auto" else int(value)


def wait_moved(log_path: Path, started: float, limit_s: float) -> float | None:
    """Seconds from the start until probes.workers: auto moved the probes (None: not within
    ``limit_s``)."""
    while time.monotonic() - started < limit_s:
        if "(probes.workers: auto;" in log_path.read_text(errors="replace"):
            return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument(
        "--workers",
        type=workers_arg,
        default=0,
        help="probes.workers (0: one process; auto: scrape once the probes moved to workers)",
    )
    parser.add_argument(
        "--check-duration",
        choices=["per_real_server", "per_virtual_server", "off"],
        default=None,
        help="metrics.check_duration (default: healthd's default)",
    )
    parser.add_argument("--gzip", action="store_true", help="send Accept-Encoding: gzip")
    parser.add_argument(
        "--client",
        choices=["http.client", "raw"],
        default="http.client",
        help="raw: read the socket until close and parse afterwards (HTTP/1.0)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    enter_host_bench()
    with tempfile.TemporaryDirectory(prefix="healthd-bench-") as tmp:
        work = Path(tmp)
        sink = Sink(
            build_sink(ROOT / "bench" / ".build"), "127.0.0.1", BASE_PORT, args.n, "tcp", work
        )
        conf = healthd_config(
            work / "healthd.yaml",
            addr="127.0.0.1",
            base=BASE_PORT,
            n=args.n,
            check="tcp",
            workdir=work,
            metrics_port=METRICS_PORT,
            workers=args.workers,
            check_duration=args.check_duration,
        )
        variant = f", metrics.check_duration {args.check_duration}" if args.check_duration else ""
        log(f"scrape: healthd run --dry-run with {args.n} real servers{variant}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "healthd", "run", "--dry-run", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=(work / "healthd.log").open("w"),
            cwd=ROOT,
        )
        try:
            started = time.monotonic()
            ready = None
            while time.monotonic() - started < 600:
                if proc.poll() is not None:
                    raise RuntimeError((work / "healthd.log").read_text()[-2000:])
                try:
                    status, body = get("/healthz")
                except OSError:
                    status = 0
                if status == 200:
                    ready = time.monotonic() - started
                    break
                time.sleep(0.5)
            time.sleep(5)  # every probe has run at least once (interval 1 s)
            moved = None
            if args.workers == "auto":
                moved = wait_moved(work / "healthd.log", started, 120.0)
                log(f"  probes moved to workers after {moved} s")
            pids = [proc.pid, *(p for p in children_of(proc.pid) if p != sink.pid)]
            rss_unscraped_kb = sum(status_kb(p, "VmRSS") for p in pids)  # before any scrape
            peak_unscraped_kb = sum(status_kb(p, "VmHWM") for p in pids)  # the start's peak
            walls: list[float] = []
            firsts: list[float] = []
            cpus: list[float] = []
            faults: list[int] = []
            size = 0
            encoding = ""
            up = float("nan")
            headers = {"Accept-Encoding": "gzip"} if args.gzip else {}
            fetch = raw_get if args.client == "raw" else timed_get
            for _ in range(args.scrapes):
                faults0 = minor_faults(proc.pid)
                cpu0 = cpu_seconds(proc.pid)  # the process that renders (workers only probe)
                t0 = time.perf_counter()
                status, body, encoding, first = fetch("/metrics", headers)
                walls.append(time.perf_counter() - t0)
                cpus.append(cpu_seconds(proc.pid) - cpu0)
                faults.append(minor_faults(proc.pid) - faults0)
                firsts.append(first)
                assert status == 200, status
                size = len(body)
                time.sleep(1.0)
            if encoding == "gzip":
                body = gzip.decompress(body)
            for line in body.decode().splitlines():
                if line.startswith("healthd_virtual_server_real_servers{") and 'state="up"' in line:
                    up = float(line.split()[-1])
            result: dict[str, Any] = {
                "n": args.n,
                "ready_s": ready,
                "scrape_wall_s": summary(walls),
                "scrape_headers_s": summary(firsts),
                "scrape_cpu_s": summary(cpus),
                "scrape_minor_faults": summary(faults),
                "bytes": size,
                "content_encoding": encoding,
                "series": sum(
                    1 for ln in body.decode().splitlines() if ln and not ln.startswith("#")
                ),
                "up": up,
                "rss_before_scrapes_kb": rss_unscraped_kb,
                "peak_rss_before_scrapes_kb": peak_unscraped_kb,
                "rss_kb": sum(status_kb(p, "VmRSS") for p in pids),
                "peak_rss_kb": sum(status_kb(p, "VmHWM") for p in pids),
                "workers": args.workers,
                "moved_after_s": moved,
                "check_duration": args.check_duration or "per_real_server",
                "client": args.client,
            }
        finally:
            stop_process(proc)
            sink.close()
    wall, cpu, first = result["scrape_wall_s"], result["scrape_cpu_s"], result["scrape_headers_s"]
    log(
        f"  scrape p50 {1000 * wall['p50']:.0f} ms, p99 {1000 * wall['p99']:.0f} ms "
        f"(headers after p50 {1000 * first['p50']:.0f} ms); daemon CPU per scrape p50 "
        f"{1000 * cpu['p50']:.0f} ms, p99 {1000 * cpu['p99']:.0f} ms, minor faults p50 "
        f"{result['scrape_minor_faults']['p50']:.0f}; {result['bytes']} bytes"
        f"{' ' + encoding if encoding else ''}, {result['series']} series, "
        f"RSS {result['rss_before_scrapes_kb']} kB before the first scrape, "
        f"{result['rss_kb']} kB after, peak {result['peak_rss_kb']} kB (before the first scrape "
        f"{result['peak_rss_before_scrapes_kb']} kB)"
    )
    if args.json:
        write_json(args.json, {"conditions": conditions(), **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
