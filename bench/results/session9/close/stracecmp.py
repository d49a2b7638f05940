"""In the VM: keepalived --check and healthd (raw netlink, one process) at N real servers,
one after the other; for each, 15 s of `strace -c -f` and 15 s of `perf stat` software
counters, to compare syscalls and context switches per check."""
import subprocess, sys, time, types
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
for kind in ("keepalived", "healthd"):
    subprocess.run(["ipvsadm", "-C"])
    sink = Sink(Path("/work/main/bench/.build/tcp-sink"), vd.RS_ADDR, vd.BASE, N, "tcp", work)
    d = vd.Daemon(kind, "tcp", N, work, args)
    time.sleep(40)
    pids = d.pids()
    checker = pids[-1]
    print(f"== {kind} pids {pids} (checker {checker})", flush=True)
    p0 = passive_opens()
    out = subprocess.run(["perf", "stat", "-e", "context-switches,cpu-migrations,page-faults,task-clock",
                          "-p", str(checker), "--", "sleep", "15"], capture_output=True, text=True)
    p1 = passive_opens()
    print(f"checks in perf window {p1-p0} ({(p1-p0)/15:.0f}/s)")
    print(out.stderr, flush=True)
    p0 = passive_opens()
    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(checker), "-o", f"/tmp/strace-{kind}.txt"])
    time.sleep(15)
    st.terminate(); st.wait()
    p1 = passive_opens()
    print(f"checks in strace window {p1-p0} ({(p1-p0)/15:.0f}/s)")
    print(Path(f"/tmp/strace-{kind}.txt").read_text(), flush=True)
    d.stop(); sink.close()
