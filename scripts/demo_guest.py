"""The README demo, run inside the test VM by scripts/demo: healthd with etc/healthd.yaml against
three real servers in network namespaces, one of them killed and restored, narrated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "kernel"))

from netns import nat_topology  # noqa: E402

LOG = Path("/tmp/healthd-demo.log")
_shown = 0


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def show_log() -> None:
    """Print healthd's log lines that appeared since the last call."""
    global _shown
    lines = LOG.read_text().splitlines() if LOG.exists() else []
    for line in lines[_shown:]:
        print(f"  healthd| {line}")
    _shown = len(lines)


def table() -> str:
    return subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True).stdout


def weights() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in table().splitlines():
        fields = line.split()
        if fields[:1] == ["->"] and fields[1][0].isdigit():
            out[fields[1]] = int(fields[3])
    return out


def healthd_view() -> str:
    """`healthd status`: healthd's own view over its control socket."""
    done = subprocess.run(
        [sys.executable, "-m", "healthd", "status", "-c", "etc/healthd.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = done.stdout if done.returncode == 0 else done.stderr
    return "\n".join("  " + line for line in text.splitlines())


def step(title: str, topo: object) -> None:
    show_log()
    say(title)
    print("kernel table (ipvsadm -Ln):")
    print("\n".join("  " + line for line in table().splitlines()))
    print("healthd's view (healthd status):")
    print(healthd_view())
    answers = topo.request(12)  # type: ignore[attr-defined]
    print(f"12 client requests to http://10.0.0.1/ from the client namespace: {dict(answers)}")


def wait(predicate: object, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - t0
        time.sleep(0.1)
    raise SystemExit(f"demo: gave up after {timeout:g}s")


def main() -> int:
    say(
        "building the seed topology: VIP 10.0.0.1:80, real servers 192.168.1.101-103:80 "
        "(web-1..web-3 in namespaces hd-nat-rs1..3), a client namespace"
    )
    topo = nat_topology(n=3)
    healthd: subprocess.Popen[bytes] | None = None
    try:
        print("kernel table before healthd starts (empty):")
        print("\n".join("  " + line for line in table().splitlines()))
        say("starting: healthd run -c etc/healthd.yaml (interval 2s, timeout 1s, rise 2, fall 3)")
        with open(LOG, "wb") as log:
            healthd = subprocess.Popen(
                [sys.executable, "-m", "healthd", "run", "-c", "etc/healthd.yaml"],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        want = {f"192.168.1.10{i}:80": 1 for i in (1, 2, 3)}
        took = wait(lambda: weights() == want, 90)
        step(f"all three real servers are up ({took:.1f}s after start)", topo)

        say("killing web-2's HTTP server (SIGKILL): its port now refuses connections")
        topo.backend("rs2").kill()
        took = wait(lambda: weights().get("192.168.1.102:80") == 0, 60)
        step(
            f"web-2 inhibited: weight 0, {took:.1f}s after the kill "
            "(bound: fall 3 x interval 2s + timeout 1s = 7s)",
            topo,
        )

        say("restarting web-2")
        topo.backend("rs2").restart()
        took = wait(lambda: weights() == want, 60)
        step(f"web-2 is back with weight 1, {took:.1f}s after the restart (rise 2)", topo)

        say("stopping healthd (SIGTERM): the table is left as it is")
        healthd.send_signal(signal.SIGTERM)
        healthd.wait(30)
        show_log()
        print("\n".join("  " + line for line in table().splitlines()))
        print(f"healthd exited with status {healthd.returncode}")
        return 0 if healthd.returncode == 0 else 1
    finally:
        if healthd is not None and healthd.poll() is None:
            healthd.kill()
        topo.teardown()
        subprocess.run(["ipvsadm", "-D", "-t", "10.0.0.1:80"], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
