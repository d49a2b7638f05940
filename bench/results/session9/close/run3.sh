#!/bin/bash
# Inside the VM: syscalls per check, healthd's Scheduler alone vs the minimal paced loop.
cd /work/main/bench/results/session9/close
ulimit -n 65536
ip link add rsnet type dummy; ip addr add 10.200.0.1/32 dev rsnet; ip link set rsnet up
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096 net.ipv4.ip_local_port_range="32768 65000"
mkfifo /tmp/ctl
/work/main/bench/.build/tcp-sink 10.200.0.1 20000 1000 tcp /tmp/ctl > /tmp/sink.log 2>&1 &
sink=$!
sleep 1
ADDR=10.200.0.1 HEALTHD_SRC=/work/main strace -f -c -o /tmp/st-sched.txt /work/main/.venv/bin/python ../../session8/host/sched.py 300 5 15
cat /tmp/st-sched.txt
TICK=0.05 strace -f -c -o /tmp/st-loop.txt /work/main/.venv/bin/python closeexp.py fin-now 300 15 $sink
cat /tmp/st-loop.txt
for r in 1 2; do
ADDR=10.200.0.1 HEALTHD_SRC=/work/main /work/main/.venv/bin/python ../../session8/host/sched.py 600 5 20
TICK=0.05 /work/main/.venv/bin/python closeexp.py fin-now 600 20 $sink
done
kill $sink
