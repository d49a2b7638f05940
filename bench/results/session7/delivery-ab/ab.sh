#!/bin/bash
# session 7: detection at N = 1000, TCP, all defaults: 0f3d451 (old) and 9b4f327 (new: bucketed delays, NO_CHANGE), alternated in one boot; keepalived once
for round in 1 2; do
  for side in new old; do
    cd /tmp/wt-$side || exit 1
    /usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s7ab/$side-$round/vm-tcp.json >/tmp/s7ab/$side-$round.log 2>&1
  done
done
cd /tmp/wt-new
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived --n 1000 --window 20 --kills 20 --json /tmp/s7ab/keepalived/vm-tcp.json >/tmp/s7ab/keepalived.log 2>&1
