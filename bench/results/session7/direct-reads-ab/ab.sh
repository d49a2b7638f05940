#!/bin/bash
# session 7: N = 1000, TCP, all defaults: 0f3d451 (old) and 48ddf0b (new: delivery cuts, settled results every 100 ms, pyroute2 answers read from the socket, sliced passes), alternated in one boot; then new with raw + auto, and keepalived
for round in 1 2; do
  for side in new old; do
    cd /tmp/wt-$side || exit 1
    /usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s7ab3/$side-$round/vm-tcp.json >/tmp/s7ab3/$side-$round.log 2>&1
  done
done
cd /tmp/wt-new
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd:auto keepalived --n 1000 --window 20 --kills 20 --json /tmp/s7ab3/auto-keepalived/vm-tcp.json >/tmp/s7ab3/auto-keepalived.log 2>&1
