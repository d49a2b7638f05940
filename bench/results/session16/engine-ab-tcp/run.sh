#!/bin/sh
set -x
for round in 1 2; do
for tree in old main; do
  root=/tmp/s16/old; [ $tree = main ] && root=/work/main
  cd $root && /usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd --n 5000 --window 20 --kills 20 --real-servers-per-virtual-server 100 --python /work/main/.venv/bin/python --json /tmp/s16/abt/$tree-$round.json
  mkdir -p /tmp/s16/abt/logs-$tree-$round && cp /tmp/s16/abt/healthd-tcp-5000.log /tmp/s16/abt/logs-$tree-$round/ 2>/dev/null
done
done
