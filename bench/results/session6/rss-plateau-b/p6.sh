#!/bin/bash
# RSS at 10 000 (one process, raw), 60 s window (the plateau): a79a267 (p6, dumps remembered by hash) and 3d4f4fd (p4), alternated
i=0
for side in p6 p4 p6; do
  cd /tmp/wt-$side || exit 1
  i=$((i+1))
  /usr/bin/python3 bench/vm_daemons.py --checks tcp --n 10000 --daemons healthd --kills 0 --window 60 --startup-limit 300 --json /tmp/s6p6/rss-$i-$side/vm-rss.json >/tmp/s6p6/rss-$i-$side.log 2>&1
done
