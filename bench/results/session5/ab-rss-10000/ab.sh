#!/bin/bash
# old code (session 4's last commit) and this session's, alternated, peak RSS at 10 000 (one process, raw)
for round in 1 2; do
  for side in old new; do
    dir=/tmp/old; [[ $side == new ]] && dir=/tmp/wt2
    cd $dir && /usr/bin/python3 bench/vm_daemons.py --checks tcp --n 10000 --daemons healthd --kills 0 --window 10 --startup-limit 300 --json /tmp/s5ab/$side-$round/vm-rss.json 2>&1 | sed "s/^/$side /"
  done
done
