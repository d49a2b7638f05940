#!/bin/bash
# Inside the VM: is the Scheduler's extra kernel time per check the working set between syscalls
# (TOUCH: random objects of a large heap touched per check) or the sink on the other vCPU (pin)?
cd /work/main/bench/results/session9/close
ulimit -n 65536
ip link add rsnet type dummy; ip addr add 10.200.0.1/32 dev rsnet; ip link set rsnet up
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096 net.ipv4.ip_local_port_range="32768 65000"
mkfifo /tmp/ctl
taskset -c 1 /work/main/bench/.build/tcp-sink 10.200.0.1 20000 1000 tcp /tmp/ctl > /tmp/sink.log 2>&1 &
sink=$!
sleep 1
for r in 1 2; do
echo "-- sink on CPU 1, checker on CPU 0"
TICK=0.05 taskset -c 0 /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
TICK=0.05 TOUCH=200 taskset -c 0 /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
ADDR=10.200.0.1 HEALTHD_SRC=/work/main taskset -c 0 /work/main/.venv/bin/python ../../session8/host/sched.py 600 5 15
echo "-- sink and checker on CPU 1"
TICK=0.05 taskset -c 1 /work/main/.venv/bin/python closeexp.py fin-now 600 15 $sink
ADDR=10.200.0.1 HEALTHD_SRC=/work/main taskset -c 1 /work/main/.venv/bin/python ../../session8/host/sched.py 600 5 15
done
kill $sink
