"""In the VM, one boot: healthd (raw netlink, one process, C engine) at N = 1000 TCP, the code
before the coarse clock (old, commit b64f0e2, /work/s12old) and after it (new, /work/main),
alternated; keepalived once. User/sys time per check over 20 s windows; clock_gettime calls per
check (strace -c, 5 s, after the window)."""
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
n = 1000
for label, root in (("keepalived", None), ("old", "/work/s12old"), ("new", "/work/main"), ("old", "/work/s12old"), ("new", "/work/main")):
    kind = "keepalived" if root is None else "healthd"
    if root:
        vd.ROOT = Path(root)
    subprocess.run(["ipvsadm", "-C"])
    sink = Sink(Path("/work/main/bench/.build/tcp-sink"), vd.RS_ADDR, vd.BASE, n, "tcp", work)
    d = vd.Daemon(kind, "tcp", n, work, args)
    time.sleep(45)
    checker = d.pids()[-1]
    (u0, s0), p0 = ut(checker), passive_opens()
    time.sleep(20)
    (u1, s1), p1 = ut(checker), passive_opens()
    c = p1 - p0
    out = f"/tmp/s12c/strace-{label}-{int(time.time())}.txt"
    q0 = passive_opens()
    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(checker), "-o", out])
    time.sleep(5)
    st.terminate(); st.wait()
    q = passive_opens() - q0
    calls = 0
    for line in Path(out).read_text().splitlines():
        if line.strip().endswith("clock_gettime"):
            calls = int(line.split()[3])
    print(f"== {label}: {c/20:.0f} checks/s, user {1e6*(u1-u0)/hz/c:.0f} us + sys {1e6*(s1-s0)/hz/c:.0f} us = {1e6*(u1-u0+s1-s0)/hz/c:.0f} us per check; clock_gettime {calls/max(q,1):.1f} per check under strace", flush=True)
    d.stop(); sink.close()
print("done", flush=True)
