#!/bin/bash
# pyroute2 reading only the header of each answer (new, 886b669) vs before (old, d3ce461), in one boot:
# netlink (1 000 destinations, dumps included), then N = 1000 TCP detection: keepalived, defaults new, defaults old, raw+auto
cd /tmp/wt-p2 || exit 1
PYTHONPATH=/tmp/wt-p2 /work/main/.venv/bin/python bench/vm_netlink.py --n 1000 --repeat 1 --pyroute2 1000 --json /tmp/s6p2/netlink-new.json >/tmp/s6p2/netlink-new.log 2>&1
cd /tmp/wt-new && PYTHONPATH=/tmp/wt-new /work/main/.venv/bin/python /tmp/wt-p2/bench/vm_netlink.py --n 1000 --repeat 1 --pyroute2 1000 --json /tmp/s6p2/netlink-old.json >/tmp/s6p2/netlink-old.log 2>&1
cd /tmp/wt-p2
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s6p2/tcp-new/vm-tcp.json >/tmp/s6p2/tcp-new.log 2>&1
cd /tmp/wt-new
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --n 1000 --window 20 --kills 20 --json /tmp/s6p2/tcp-old/vm-tcp.json >/tmp/s6p2/tcp-old.log 2>&1
cd /tmp/wt-p2
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd:auto --n 1000 --window 20 --kills 20 --json /tmp/s6p2/tcp-raw/vm-tcp.json >/tmp/s6p2/tcp-raw.log 2>&1
