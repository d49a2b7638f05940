#!/bin/bash
# in the VM: the Scheduler alone at 800 probes/s, probes starting up to 40 ms early (the default) or up to 100 ms (10 % of the interval), alternated
ip link add rsnet type dummy && ip addr add 10.200.0.1/32 dev rsnet && ip link set rsnet up
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096
ulimit -n 65536
mkfifo /tmp/ctl
/work/main/bench/.build/tcp-sink 10.200.0.1 20000 1000 tcp /tmp/ctl > /tmp/sink.log 2>&1 &
sleep 2
for r in 1 2 3; do for early in 0.04 0.1 0.25; do
  EARLY_S=$early EARLY_FRACTION=0.25 ADDR=10.200.0.1 HEALTHD_SRC=/work/main /work/main/.venv/bin/python /tmp/s8/sched.py 800 5 20
done; done
