# ran as: tests/vm/run --timeout 1200 --mem 2G --rwdir /tmp/s12u -- /usr/bin/python3 /tmp/s12u/split.py
"""In the VM, eleventh pass: user/sys time per TCP check of keepalived's checker and of healthd
(raw netlink, one process, the C engine) at N = 1000 and 100, 20 s windows, and where healthd's
user time goes (py-spy, 15 s) at N = 1000."""
import os, subprocess, sys, time, types
from pathlib import Path
sys.path.insert(0, "/work/main/bench")
import vm_daemons as vd
from common import Sink
vd.setup_guest()
work = Path("/tmp/healthd-bench"); work.mkdir(exist_ok=True)
args = types.SimpleNamespace(python="/work/main/.venv/bin/python", workers=0)
hz = os.sysconf("SC_CLK_TCK")
def passive_opens():
    lines = Path("/proc/net/snmp").read_text().splitlines()
    tcp = [l.split() for l in lines if l.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("PassiveOpens")])
def ut(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12])
for n in (1000, 100):
    for kind in ("keepalived", "healthd"):
        subprocess.run(["ipvsadm", "-C"])
        sink = Sink(Path("/work/main/bench/.build/tcp-sink"), vd.RS_ADDR, vd.BASE, n, "tcp", work)
        d = vd.Daemon(kind, "tcp", n, work, args)
        time.sleep(45)
        checker = d.pids()[-1]
        (u0, s0), p0 = ut(checker), passive_opens()
        time.sleep(20)
        (u1, s1), p1 = ut(checker), passive_opens()
        c = p1 - p0
        print(f"== N={n} {kind}: {c/20:.0f} checks/s, user {1e6*(u1-u0)/hz/c:.0f} us + sys {1e6*(s1-s0)/hz/c:.0f} us per check", flush=True)
        if kind == "healthd" and n == 1000 and os.path.exists("/opt/healthd-bench/venv/bin/py-spy"):
            subprocess.run(["/opt/healthd-bench/venv/bin/py-spy", "record", "-p", str(checker), "-d", "15", "-r", "50", "-f", "raw", "-o", "/tmp/s12u/pyspy-healthd-1000.txt", "--nonblocking"], capture_output=True)
        d.stop(); sink.close()
print("done", flush=True)
