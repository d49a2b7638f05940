#!/bin/bash
# session 6 at ffc98ed: kernel suite, netlink (dumps), N = 1000 TCP detection, RSS at 10 000
cd /tmp/wt-p3 || exit 1
PYTHONPATH=/tmp/wt-p3 .venv/bin/python -m pytest -p no:cacheprovider -m kernel tests/kernel -q >/tmp/s6p3/kernel.log 2>&1
echo "kernel suite exit $?" >>/tmp/s6p3/kernel.log
PYTHONPATH=/tmp/wt-p3 .venv/bin/python bench/vm_netlink.py --n 1000 --repeat 1 --pyroute2 1000 --json /tmp/s6p3/netlink/vm-netlink.json >/tmp/s6p3/netlink.log 2>&1
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd-defaults healthd:auto --n 1000 --window 20 --kills 20 --json /tmp/s6p3/tcp/vm-tcp.json >/tmp/s6p3/tcp.log 2>&1
/usr/bin/python3 bench/vm_daemons.py --checks tcp --n 10000 --daemons healthd healthd-defaults --kills 0 --window 10 --startup-limit 300 --json /tmp/s6p3/rss/vm-rss.json >/tmp/s6p3/rss.log 2>&1
