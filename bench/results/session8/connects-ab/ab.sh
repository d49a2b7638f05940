#!/bin/bash
# session 8: N = 1000, TCP: a00fe08 (old) and 6250b5f (new: connects in progress in one epoll set), raw one process and all defaults, alternated in one boot; keepalived once
cd /tmp/wt-new
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived --n 1000 --window 20 --kills 20 --json /tmp/s8d/keepalived/vm-tcp.json >/tmp/s8d/keepalived.log 2>&1
for round in 1 2; do
  for side in new old; do
    cd /tmp/wt-$side || exit 1
    /usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s8d/$side-$round/vm-tcp.json >/tmp/s8d/$side-$round.log 2>&1
  done
done
