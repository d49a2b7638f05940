#!/bin/bash
# in the VM: healthd's Scheduler alone (no daemon) against tcp-sink on a dummy address; old vs new
ip link add rsnet type dummy && ip addr add 10.200.0.1/32 dev rsnet && ip link set rsnet up
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096
ulimit -n 65536
mkfifo /tmp/ctl
/work/main/bench/.build/tcp-sink 10.200.0.1 20000 1000 tcp /tmp/ctl > /tmp/sink.log 2>&1 &
sleep 2
for n in 300 600; do for r in 1 2; do for src in /tmp/wt-old /work/main; do
  echo -n "$src "; ADDR=10.200.0.1 HEALTHD_SRC=$src /work/main/.venv/bin/python /tmp/s8/sched.py $n 5 20
done; done; done
