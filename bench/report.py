"""Turns the result JSON files of a run into the tables and the plot of docs/benchmarks.md.

    python bench/report.py RESULTS_DIR [--doc docs/benchmarks.md] [--plot PNG]

Prints the tables (markdown); with ``--doc`` it also replaces the part of the document between
``<!-- figures:begin -->`` and ``<!-- figures:end -->``.  The plot needs matplotlib (the bench
tools venv of bench/run-all has it); without it the tables are still written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

NA = "n/a"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
DAEMONS = {
    "keepalived": "keepalived",
    "healthd": "healthd (raw netlink)",
    "healthd:auto": "healthd, workers auto (raw netlink)",
    "healthd:2": "healthd, 2 workers (raw netlink)",
    "healthd-pyroute2": "healthd (pyroute2, the default)",
    "healthd-defaults": "healthd, all defaults (pyroute2, workers auto)",
}
BOUND_VM_S = 2 * 1.0 + 0.9 + 0.02 + 1.0  # fall x interval + timeout + 20 ms, + 1 s in the VM


def load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def fmt(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    return f"{value * scale:.{digits}f}"


def ratio(a: Any, b: Any) -> str:
    if not a or not b or any(isinstance(v, float) and math.isnan(v) for v in (a, b)):
        return NA
    return f"{a / b:.2f}x"


def vm_runs(results: Path) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for path in sorted(results.glob("vm-*.json")):
        data = load(path)
        if data and path.name != "vm-netlink.json":
            per_vs = data["args"].get("per_vs")  # what the case's result says, if it does
            runs += [dict({"per_vs": per_vs} | r, source=path.name) for r in data["runs"]]
    return runs


# (N, real servers per virtual server): all N behind one virtual server, and since the
# sixteenth pass N = 5000 split into virtual servers of 100 as well (vm_daemons.py
# --real-servers-per-virtual-server: the witness dumps only the killed backends' ones)
LAYOUTS: tuple[tuple[int, int | None], ...] = ((100, None), (1000, None), (5000, None), (5000, 100))


def layout(n: int, per_vs: int | None) -> str:
    return str(n) if per_vs is None else f"{n} ({-(-n // per_vs)} virtual servers of {per_vs})"


def pick(
    runs: list[dict[str, Any]], daemon: str, check: str, n: int, per_vs: int | None = None
) -> dict[str, Any] | None:
    found = [
        r
        for r in runs
        if r["daemon"] == daemon
        and r["check"] == check
        and r["n"] == n
        and r.get("per_vs") == per_vs
        and "window" in r
    ]
    return found[-1] if found else None


def cpu_table(runs: list[dict[str, Any]]) -> list[str]:
    daemons = [d for d in DAEMONS if any(r["daemon"] == d for r in runs)]
    head = "| check | N | " + " | ".join(f"{DAEMONS[d]}: ms CPU/check (checks/s)" for d in daemons)
    head += " | " + " | ".join(f"{DAEMONS[d]} / keepalived" for d in daemons[1:]) + " |"
    out = [head, "|" + "---|" * (2 + 2 * len(daemons) - 1)]
    for check in ("tcp", "http"):
        for n, per_vs in LAYOUTS:
            cells = {d: pick(runs, d, check, n, per_vs) for d in daemons}
            if not any(cells.values()):
                continue
            row = f"| {check.upper()} | {layout(n, per_vs)} | "
            row += " | ".join(
                f"{fmt(c['window']['cpu_ms_per_check'], 3)} ({c['window']['checks_per_s']:.0f})"
                if c
                else NA
                for c in cells.values()
            )
            base = cells.get("keepalived")
            row += (
                " | "
                + " | ".join(
                    ratio(
                        cells[d]["window"]["cpu_ms_per_check"] if cells[d] else None,  # type: ignore[index]
                        base["window"]["cpu_ms_per_check"] if base else None,
                    )
                    for d in daemons[1:]
                )
            )
            out.append(row + " |")
    return out


def detection_table(runs: list[dict[str, Any]]) -> list[str]:
    daemons = [d for d in DAEMONS if any(r["daemon"] == d for r in runs)]
    out = [
        "| check | N | daemon | down p50 / p99 / max (s) | kills | back up p50 / p99 (s) "
        "| poll period (s) | within bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for check in ("tcp", "http"):
        for n, per_vs in LAYOUTS:
            for d in daemons:
                r = pick(runs, d, check, n, per_vs)
                if not r or "detection" not in r:
                    continue
                det = r["detection"]
                down, up = det["down_s"], det["up_s"]
                ok = down["n"] and down["p99"] <= BOUND_VM_S and not det["unfinished"]
                late = f" (+{det['unfinished']} unfinished)" if det["unfinished"] else ""
                out.append(
                    f"| {check.upper()} | {layout(n, per_vs)} | {DAEMONS[d]} | "
                    f"{fmt(down['p50'])} / "
                    f"{fmt(down['p99'])} / {fmt(down['max'])} | {down['n']}{late}"
                    f" | {fmt(up['p50'])} / {fmt(up['p99'])} | {fmt(det['poll_period_s'], 3)} "
                    f"| {'yes' if ok else 'no'} |"
                )
    return out


def rss_table(runs: list[dict[str, Any]]) -> list[str]:
    daemons = [d for d in DAEMONS if any(r["daemon"] == d for r in runs)]
    out = ["| N | " + " | ".join(f"{DAEMONS[d]} peak RSS (MB)" for d in daemons) + " |"]
    # PSS: at the end of the case, each shared page counted once over the daemon's processes
    out.append("|---|" + "---|" * len(daemons))
    for n in (1000, 5000, 10000):
        cells = []
        for d in daemons:
            found = [
                r for r in runs if r["daemon"] == d and r["n"] == n and "peak_rss_total_kb" in r
            ]
            cells.append(
                " / ".join(
                    f"{r['peak_rss_total_kb'] / 1024:.1f}"
                    + (f" (PSS {r['pss_total_kb'] / 1024:.1f})" if "pss_total_kb" in r else "")
                    for r in found
                )
                if found
                else NA
            )
        if any(c != NA for c in cells):
            out.append(f"| {n} | " + " | ".join(cells) + " |")
    return out


def netlink_table(data: Any) -> list[str]:
    if not data:
        return []
    out = [
        "| method | N | build: ms CPU/op (s wall) | weights: ms CPU/op (s wall) |",
        "|---|---|---|---|",
    ]
    for r in data["runs"]:
        cells = []
        for step in ("build", "weights"):
            s = r[step]
            cells.append(f"{1000 * s['cpu_s'] / max(s['ops'], 1):.3f} ({s['wall_s']:.1f})")
        out.append(
            f"| {r['method']} (run {r['attempt'] + 1}) | {r['n']} | " + " | ".join(cells) + " |"
        )
    return out


def host_rate_table(results: Path) -> list[str]:
    out = [
        "| check | workers | real servers | interval (s) | /metrics read | scheduled/s | done/s "
        "| CPU % (per process) | µs CPU/check | delay p50 / p99 (ms) | p99 < 10 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for path in sorted(results.glob("host-rate-*.json")):
        data = load(path)
        workers = data.get("workers") or 0
        for r in data["runs"]:
            interval_s = r["n"] / r["scheduled_per_s"]
            scrape_s = r.get("scrape_every_s") or 0.0
            rows.append((r["check"], workers, -interval_s, scrape_s, r["scheduled_per_s"], r))
    for check, workers, minus_interval_s, scrape_s, _, r in sorted(rows, key=lambda x: x[:5]):
        per_process = ", ".join(map(str, r["cpu_pct_per_process"]))
        scraped = f"every {scrape_s:g} s ({r.get('scrapes', 0)})" if scrape_s else "no"
        out.append(
            f"| {check.upper()} | {workers} | {r['n']} | {-minus_interval_s:g} | {scraped} "
            f"| {r['scheduled_per_s']:.0f} | {r['checks_per_s']:.0f} "
            f"| {r['cpu_pct']:.0f} ({per_process}) | {fmt(r['cpu_us_per_check'], 1)} "
            f"| {fmt(r['delay_p50_ms'])} / {fmt(r['delay_p99_ms'])} "
            f"| {'yes' if r['delay_p99_ms'] < 10 else 'no'} |"
        )
    return out


def floor_lines(results: Path) -> list[str]:
    data = load(results / "host-floor.json")
    if not data:
        return []
    lines = [""]
    for key, what in (
        ("rounds", "in Python (`bench/host_floor.py`, a bare loop of a TCP probe's system calls"),
        ("c_rounds", "in C (`bench/tcp-floor.c`, the same loop without the interpreter"),
    ):
        rounds = data.get(key) or []
        if not rounds:
            continue
        per_check = [r["cpu_us_per_check"] for r in rounds]
        sys_share = sum(r["sys_us_per_check"] for r in rounds) / sum(per_check)
        lines.append(
            f"- The floor {what}, {len(per_check)} rounds): "
            f"{min(per_check):.1f}-{max(per_check):.1f} µs CPU per check, "
            f"{100 * sys_share:.0f} % of it system time."
        )
    return lines


def host_detect_table(results: Path) -> list[str]:
    out = [
        "| check | N | down p50 / p99 / max (s) | kills | back up p50 / p99 (s) | "
        "CPU % | delay p99 (ms) | within bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(results.glob("host-detect-*.json")):
        data = load(path)
        for r in data["runs"]:
            d, u = r["down_s"], r["up_s"]
            unfinished = f" (+{r['unfinished']} unfinished)" if r["unfinished"] else ""
            out.append(
                f"| {r['check'].upper()} | {r['n']} | {fmt(d['p50'])} / {fmt(d['p99'])} / "
                f"{fmt(d['max'])} | {d['n']}{unfinished} | {fmt(u['p50'])} / {fmt(u['p99'])} | "
                f"{r['cpu_pct']:.0f} | {fmt(r['delay_p99_ms'])} | "
                f"{'yes' if r['within_bound'] else 'no'} |"
            )
    return out


def scrape_table(results: Path) -> list[str]:
    out = []
    for path in sorted(results.glob("host-scrape*.json")):
        r = load(path)
        wall, cpu = r["scrape_wall_s"], r["scrape_cpu_s"]
        out.append(
            f"- N = {r['n']} real servers, `metrics.check_duration:"
            f" {r.get('check_duration', 'per_real_server')}`:"
            f" scrape wall p50 {fmt(wall['p50'], 0, 1000)} ms,"
            f" p99 {fmt(wall['p99'], 0, 1000)} ms ({wall['n']} scrapes);"
            f" daemon CPU per scrape p50 {fmt(cpu['p50'], 0, 1000)} ms;"
            f" {r['series']} series, {r['bytes'] / 1e6:.1f} MB; {r['up']:.0f} up;"
            f" daemon RSS {r['rss_kb'] / 1024:.0f} MB after the scrapes"
            + (
                f" ({r['rss_before_scrapes_kb'] / 1024:.0f} MB before the first,"
                f" peak {r['peak_rss_kb'] / 1024:.0f} MB)"
                if "rss_before_scrapes_kb" in r
                else ""
            )
        )
    return out


def plot(runs: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: no matplotlib, no plot", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {
        "keepalived": "o-",
        "healthd": "s-",
        "healthd:auto": "v-",
        "healthd:2": "^-",
        "healthd-pyroute2": "d-",
        "healthd-defaults": "x-",
    }
    for check, dash in (("tcp", ""), ("http", "--")):
        for d in DAEMONS:
            points = [
                (n, r["window"]["cpu_ms_per_check"])
                for n in (100, 1000, 5000)
                if (r := pick(runs, d, check, n)) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                style = styles[d] if not dash else styles[d].replace("-", "--")
                ax.plot(xs, ys, style, label=f"{DAEMONS[d]}, {check.upper()}")
    ax.set_xscale("log")
    ax.set_yscale("log")  # pyroute2 at N = 5000 is an order of magnitude above the rest
    ax.set_xlabel("real servers (N), interval 1 s")
    ax.set_ylabel("guest CPU ms per check (TCG)")
    ax.set_title("CPU per check, same VM, kernel and backends")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


def render(results: Path) -> str:
    runs = vm_runs(results)
    parts = [
        "### CPU per check (VM)",
        "",
        *cpu_table(runs),
        "",
        "### Detection and recovery (VM)",
        "",
        f"Bound in the VM: fall x interval + timeout + 20 ms + 1 s = {BOUND_VM_S:.2f} s.",
        "",
        *detection_table(runs),
        "",
        "### Peak RSS (VM)",
        "",
        *rss_table(runs),
        "",
        "### Netlink (VM)",
        "",
        *netlink_table(load(results / "vm-netlink.json")),
        "",
        "### Checks per second on one core (host)",
        "",
        *host_rate_table(results),
        *floor_lines(results),
        "",
        "### Detection and recovery (host, dry-run table)",
        "",
        "Bound on the host: fall x interval + timeout + 20 ms = 2.92 s.",
        "",
        *host_detect_table(results),
        "",
        "### /metrics scrape (host)",
        "",
        *scrape_table(results),
    ]
    return "\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    text = render(args.results)
    print(text)
    if args.plot:
        plot(vm_runs(args.results), args.plot)
    if args.doc:
        doc = args.doc.read_text()
        if BEGIN in doc and END in doc:
            head, rest = doc.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            args.doc.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
        else:
            print(f"report.py: {args.doc} has no {BEGIN} ... {END} section", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
