import os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "/work/main/bench")
from common import ROOT, Sink, build_sink
from configs import healthd_config
from host_rate import BASE_PORT, enter_host_bench
n = int(sys.argv[1]); wrap = sys.argv[2]; extra = dict(a.split("=",1) for a in sys.argv[3:])
enter_host_bench()
with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    sink = Sink(build_sink(ROOT/"bench"/".build"), "127.0.0.1", BASE_PORT, n, "tcp", work)
    conf = healthd_config(work/"h.yaml", addr="127.0.0.1", base=BASE_PORT, n=n, check="tcp", workdir=work, metrics_port=9541, workers=extra.get("workers"), netlink=extra.get("netlink","raw"))
    cmd = [sys.executable, *( [wrap, "-m", "healthd"] if wrap != "-" else ["-m", "healthd"]), "run", "--dry-run", "-c", str(conf)]
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=open("/tmp/s19/prof.log","w"))
    t0=time.monotonic()
    while time.monotonic()-t0 < float(extra.get("secs","70")):
        time.sleep(5)
        st = open(f"/proc/{p.pid}/status").read()
        rss = st.split("VmRSS:")[1].split("\n")[0].strip(); hwm = st.split("VmHWM:")[1].split("\n")[0].strip()
        print(f"t={time.monotonic()-t0:.0f} rss={rss} hwm={hwm}", flush=True)
    p.terminate(); p.wait(20); sink.close()
