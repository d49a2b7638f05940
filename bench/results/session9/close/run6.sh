#!/bin/bash
# Inside the VM: where the kernel time goes, Scheduler vs the minimal loop (perf cpu-clock).
cd /work/main/bench/results/session9/close
ulimit -n 65536
ip link add rsnet type dummy; ip addr add 10.200.0.1/32 dev rsnet; ip link set rsnet up
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096 net.ipv4.ip_local_port_range="32768 65000" kernel.perf_event_paranoid=-1 kernel.kptr_restrict=0
mkfifo /tmp/ctl
/work/main/bench/.build/tcp-sink 10.200.0.1 20000 1000 tcp /tmp/ctl > /tmp/sink.log 2>&1 &
sink=$!
sleep 1
ADDR=10.200.0.1 HEALTHD_SRC=/work/main perf record -e cpu-clock -F 2000 -o /tmp/perf-sched.data -- /work/main/.venv/bin/python ../../session8/host/sched.py 600 8 20 2>&1 | tail -3
TICK=0.05 perf record -e cpu-clock -F 2000 -o /tmp/perf-loop.data -- /work/main/.venv/bin/python closeexp.py fin-now 600 20 $sink 2>&1 | tail -3
for f in sched loop; do
echo "=== $f"
perf report -i /tmp/perf-$f.data --sort dso --stdio 2>&1 | grep -v "^#" | grep -v "^$" | head -8
perf report -i /tmp/perf-$f.data --dso '[kernel.kallsyms]' --sort sym --stdio 2>&1 | grep -v "^#" | grep -v "^$" | head -50
done
kill $sink
