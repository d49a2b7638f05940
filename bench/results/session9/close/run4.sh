#!/bin/bash
# Inside the VM: what 6 clock reads and 2 getsockopts add to a check (minimal paced loop).
cd /work/main/bench/results/session9/close
ulimit -n 65536
ip link add rsnet type dummy; ip addr add 10.200.0.1/32 dev rsnet; ip link set rsnet up
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096 net.ipv4.ip_local_port_range="32768 65000"
cat /sys/devices/system/cpu/vulnerabilities/meltdown /sys/devices/system/cpu/vulnerabilities/spectre_v2; grep -o -w "pti\|pcid\|invpcid" /proc/cpuinfo | sort | uniq -c
mkfifo /tmp/ctl
/work/main/bench/.build/tcp-sink 10.200.0.1 20000 1000 tcp /tmp/ctl > /tmp/sink.log 2>&1 &
sink=$!
sleep 1
for r in 1 2; do
TICK=0.05 /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
TICK=0.05 CLK=6 /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
TICK=0.05 CLK=6 CLOCKKIND=coarse /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
TICK=0.05 GSO=1 /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
done
/work/main/.venv/bin/python - <<'PY'
import time, os
for name, f in [("mono", time.monotonic), ("coarse", lambda: time.clock_gettime(time.CLOCK_MONOTONIC_COARSE)), ("real", time.time)]:
    o0 = os.times(); t0 = time.perf_counter()
    for _ in range(100000): f()
    o1 = os.times()
    print(name, f"{1e6*((o1.user-o0.user)+(o1.system-o0.system))/100000:.2f} us per read (user {1e6*(o1.user-o0.user)/100000:.2f})")
print("coarse res", time.clock_getres(time.CLOCK_MONOTONIC_COARSE))
PY
kill $sink
