#!/bin/bash
# session 8: N = 1000, TCP, all defaults: a00fe08 (old: auto moves to two workers at once) and 952bae4 (new: connects in one epoll set; auto moves to one worker, to two only if it falls behind), alternated in one boot; keepalived once. Both run by 952bae4's vm_daemons.py (waits --settle 80 s after the first move: worker start, two windows, a second move and its start).
cd /tmp/wt-new
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived --n 1000 --window 20 --kills 20 --json /tmp/s8e/keepalived/vm-tcp.json >/tmp/s8e/keepalived.log 2>&1
for round in 1 2; do
  for side in new old; do
    cd /tmp/wt-$side || exit 1
    /usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --n 1000 --window 20 --kills 20 --settle 80 --json /tmp/s8e/$side-$round/vm-tcp.json >/tmp/s8e/$side-$round.log 2>&1
  done
done
