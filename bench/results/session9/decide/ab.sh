#!/bin/bash
# Inside the VM: 436a935 (old: a decided TCP result handled at once) vs the working tree (new:
# handled after the wake-up's starts). The Scheduler alone (sched.py), then the daemon at N = 1000.
out=/tmp/s9ab
ulimit -n 65536
ip link add rsnet type dummy; ip addr add 10.200.0.1/32 dev rsnet; ip link set rsnet up
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096 net.ipv4.ip_local_port_range="32768 65000"
mkfifo /tmp/ctl
/work/main/bench/.build/tcp-sink 10.200.0.1 20000 1000 tcp /tmp/ctl > /tmp/sink.log 2>&1 &
sink=$!
sleep 1
S=/work/main/bench/results/session8/host/sched.py
for r in 1 2; do
  for t in /tmp/wt-old /work/main; do
    echo -n "$t: "; ADDR=10.200.0.1 HEALTHD_SRC=$t /work/main/.venv/bin/python $S 600 5 20
  done
done
kill $sink; wait $sink 2>/dev/null
ip link del rsnet
for r in 1 2; do
  for t in old new; do
    tree=/work/main; [ $t = old ] && tree=/tmp/wt-old
    /work/main/.venv/bin/python $tree/bench/vm_daemons.py --daemons healthd --checks tcp --n 1000 --kills 0 --json $out/$t-$r/vm-tcp.json 2>&1 | grep -E "CPU|failed"
  done
done
/work/main/.venv/bin/python /work/main/bench/vm_daemons.py --daemons keepalived --checks tcp --n 1000 --kills 0 --json $out/keepalived/vm-tcp.json 2>&1 | grep -E "CPU|failed"
