"""In the VM: the exact syscall sequence of keepalived's and healthd's checker (strace, 1 s),
and each one's user/sys split over 20 s."""
import subprocess, sys, time, types, os
from pathlib import Path
sys.path.insert(0, "/work/main/bench")
import vm_daemons as vd
from common import Sink
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
vd.setup_guest()
work = Path("/tmp/healthd-bench"); work.mkdir(exist_ok=True)
args = types.SimpleNamespace(python="/work/main/.venv/bin/python", workers=None)
def passive_opens():
    lines = Path("/proc/net/snmp").read_text().splitlines()
    tcp = [l.split() for l in lines if l.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("PassiveOpens")])
def ut(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12])
hz = os.sysconf("SC_CLK_TCK")
for kind in ("keepalived", "healthd"):
    subprocess.run(["ipvsadm", "-C"])
    sink = Sink(Path("/work/main/bench/.build/tcp-sink"), vd.RS_ADDR, vd.BASE, N, "tcp", work)
    d = vd.Daemon(kind, "tcp", N, work, args)
    time.sleep(40)
    checker = d.pids()[-1]
    (u0, s0), p0, k0 = ut(checker), passive_opens(), ut(sink.pid)
    time.sleep(20)
    (u1, s1), p1, k1 = ut(checker), passive_opens(), ut(sink.pid)
    n = p1 - p0
    print(f"== {kind}: {n/20:.0f} checks/s user {1e6*(u1-u0)/hz/n:.0f} us sys {1e6*(s1-s0)/hz/n:.0f} us per check; sink user {1e6*(k1[0]-k0[0])/hz/n:.0f} sys {1e6*(k1[1]-k0[1])/hz/n:.0f}", flush=True)
    st = subprocess.Popen(["strace", "-f", "-tt", "-p", str(checker), "-o", f"/tmp/seq-{kind}.txt"])
    time.sleep(1.5)
    st.terminate(); st.wait()
    lines = Path(f"/tmp/seq-{kind}.txt").read_text().splitlines()
    print("\n".join(lines[200:260]), flush=True)
    d.stop(); sink.close()
