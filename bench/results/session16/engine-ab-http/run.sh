#!/bin/sh
set -x
for round in 1 2; do
for tree in old main; do
  root=/tmp/s16/old; [ $tree = main ] && root=/work/main
  cd $root && /usr/bin/python3 bench/vm_daemons.py --checks http --daemons healthd --n 5000 --window 20 --kills 20 --real-servers-per-virtual-server 100 --python /work/main/.venv/bin/python --json /tmp/s16/ab/$tree-$round.json
  mkdir -p /tmp/s16/ab/logs-$tree-$round && cp /tmp/s16/ab/healthd-http-5000.log /tmp/s16/ab/logs-$tree-$round/ 2>/dev/null
done
done
