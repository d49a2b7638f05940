"""healthd run --dry-run, N real servers, workers 0, engine_thread on/off: CPU per thread, delays."""
import subprocess, sys, tempfile, time, urllib.request, re, os
from pathlib import Path
sys.path.insert(0, "/work/main/bench")
from common import ROOT, Sink, build_sink, status_kb, stop_process, rollup_kb
from configs import healthd_config
from host_rate import BASE_PORT, enter_host_bench

n = int(sys.argv[1]); thread = sys.argv[2] == "thread"; dur = float(sys.argv[3])
enter_host_bench()
TCK = os.sysconf("SC_CLK_TCK")
def tasks(pid):
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        f = open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
        out[t] = (int(f[11]) + int(f[12])) / TCK
    return out
def delays():
    text = urllib.request.urlopen("http://127.0.0.1:9541/metrics", timeout=60).read().decode()
    b = {}
    for line in text.splitlines():
        if line.startswith("healthd_check_schedule_delay_seconds_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            b[le] = b.get(le, 0) + float(line.rsplit(" ", 1)[1])
        if line.startswith("healthd_checks_total") or line.startswith("healthd_check_results_total"):
            pass
    return b
with tempfile.TemporaryDirectory(prefix="healthd-bench-") as tmp:
    work = Path(tmp)
    sink = Sink(build_sink(ROOT / "bench" / ".build"), "127.0.0.1", BASE_PORT, n, "tcp", work)
    conf = healthd_config(work / "healthd.yaml", addr="127.0.0.1", base=BASE_PORT, n=n, check="tcp",
                          workdir=work, metrics_port=9541, workers=0)
    if thread:
        conf.write_text(conf.read_text().replace("probes:\n", "probes:\n  engine_thread: true\n"))
    proc = subprocess.Popen([sys.executable, "-m", "healthd", "run", "--dry-run", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=(work / "healthd.log").open("w"))
    time.sleep(15)
    d0 = delays(); c0 = tasks(proc.pid); s0 = sum(tasks(sink.pid).values()); t0 = time.monotonic()
    time.sleep(dur)
    c1 = tasks(proc.pid); s1 = sum(tasks(sink.pid).values()); wall = time.monotonic() - t0
    d1 = delays()
    per = {k: round((c1[k] - c0.get(k, 0)) / wall * 100, 1) for k in c1 if c1[k] - c0.get(k, 0) > 0.05}
    total = sum((c1[k] - c0.get(k, 0)) for k in c1)
    diff = {k: d1[k] - d0.get(k, 0) for k in d1}
    count = diff.get("+Inf", 0)
    late = count - diff.get("0.1", 0)
    over10 = count - diff.get("0.01", 0)
    print(f"n={n} thread={thread}: threads %core {per}, total {total/wall*100:.0f}% ; sink {(s1-s0)/wall*100:.0f}%; "
          f"starts {count/wall:.0f}/s, >10ms {over10/max(count,1)*100:.2f}%, >100ms {late/max(count,1)*100:.2f}%; "
          f"rss {status_kb(proc.pid,'VmRSS')/1024:.1f} MB")
    stop_process(proc)
    sink.close()
    log = (work / "healthd.log").read_text()
    print("\n".join(l for l in log.splitlines() if "WARN" in l or "ERROR" in l or "Trace" in l)[-1500:])
