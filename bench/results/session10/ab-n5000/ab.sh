#!/bin/bash
# session 10: N = 5000, TCP, healthd raw in one process: 74424c1 (the first full run's code) and 02176a7's code, alternated in one boot, driven by 02176a7's bench/; keepalived once; no kills
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived --n 5000 --window 20 --kills 0 --json /tmp/s10ab/keepalived/vm-tcp.json >/tmp/s10ab/keepalived.log 2>&1
for round in 1 2; do
  for side in new old; do
    if [[ $side == new ]]; then cd /work/main; else cd /tmp/wt-old; fi
    /usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd --n 5000 --window 20 --kills 0 --json /tmp/s10ab/$side-$round/vm-tcp.json >/tmp/s10ab/$side-$round.log 2>&1
  done
done
echo done
