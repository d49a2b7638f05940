#!/bin/bash
# Inside the VM: each variant in a fresh network namespace (its own TIME_WAIT table).
cd /work/main/bench/results/session9/close
ulimit -n 65536
RATE=${RATE:-600}
for round in 1 2; do
for v in fin-now rst-now fin-epoll fin-peer; do
  ns=c$v$round
  ip netns add $ns
  ip -n $ns link set lo up
  ip -n $ns link add rsnet type dummy
  ip -n $ns addr add 10.200.0.1/32 dev rsnet
  ip -n $ns link set rsnet up
  ip netns exec $ns sysctl -qw net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096 net.ipv4.ip_local_port_range="32768 65000"
  rm -f /tmp/ctl-$ns; mkfifo /tmp/ctl-$ns
  ip netns exec $ns /work/main/bench/.build/tcp-sink 10.200.0.1 20000 1000 tcp /tmp/ctl-$ns > /tmp/sink-$ns.log 2>&1 &
  sink=$!
  sleep 1
  ip netns exec $ns /work/main/.venv/bin/python closeexp.py $v $RATE ${SECS:-20} $sink
  kill $sink; wait $sink 2>/dev/null
  ip netns del $ns
done
done
