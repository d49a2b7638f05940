#!/bin/bash
# session 5's last commit (old, 6c127ad) and session 6's memory cuts (new, d3ce461), alternated in one boot:
# peak RSS at 10 000 real servers (one process, raw adapter)
for round in 1 2; do
  for side in new old; do
    cd /tmp/wt-$side || exit 1
    /usr/bin/python3 bench/vm_daemons.py --checks tcp --n 10000 --daemons healthd --kills 0 --window 10 --startup-limit 300 --json /tmp/s6ab/$side-$round/vm-rss.json >/tmp/s6ab/$side-$round.log 2>&1
  done
done
