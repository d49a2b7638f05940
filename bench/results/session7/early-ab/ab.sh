#!/bin/bash
# session 7: N = 1000, TCP, all defaults: 7827f95 (old) and 263e6f5 (new: probes start up to 40 ms early, was 10), alternated in one boot; keepalived once
for round in 1 2; do
  for side in new old; do
    cd /tmp/wt-$side || exit 1
    /usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s7d/$side-$round/vm-tcp.json >/tmp/s7d/$side-$round.log 2>&1
  done
done
cd /tmp/wt-new
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived --n 1000 --window 20 --kills 20 --json /tmp/s7d/keepalived/vm-tcp.json >/tmp/s7d/keepalived.log 2>&1
