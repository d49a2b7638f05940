#!/bin/bash
# RSS at 10 000 (one process, raw), a 60 s window so that every probe has a result and its records (the plateau):
# this session's code (p4, 3d4f4fd) twice, session 5's (old, 6c127ad) once
for side in p4 old p4; do
  cd /tmp/wt-$side || exit 1
  n=$(ls -d /tmp/s6p5/rss-$side* 2>/dev/null | wc -l)
  /usr/bin/python3 bench/vm_daemons.py --checks tcp --n 10000 --daemons healthd --kills 0 --window 60 --startup-limit 300 --json /tmp/s6p5/rss-$side-$n/vm-rss.json >/tmp/s6p5/rss-$side-$n.log 2>&1
done
