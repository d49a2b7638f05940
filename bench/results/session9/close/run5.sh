#!/bin/bash
# Inside the VM: user work between connects (inline) vs after the tick's connects (deferred).
cd /work/main/bench/results/session9/close
ulimit -n 65536
ip link add rsnet type dummy; ip addr add 10.200.0.1/32 dev rsnet; ip link set rsnet up
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096 net.ipv4.ip_local_port_range="32768 65000"
mkfifo /tmp/ctl
/work/main/bench/.build/tcp-sink 10.200.0.1 20000 1000 tcp /tmp/ctl > /tmp/sink.log 2>&1 &
sink=$!
sleep 1
for r in 1 2; do
TICK=0.05 /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
TICK=0.05 SPIN_US=150 /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
TICK=0.05 SPIN_US=150 DEFER=1 /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
done
kill $sink
