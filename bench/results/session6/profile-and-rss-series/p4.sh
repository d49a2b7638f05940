#!/bin/bash
# session 6: RSS at 10 000 (one process, raw) with the RSS series: 3d4f4fd (p4), d3ce461 (new: memory cuts only), 6c127ad (old);
# N = 1000 TCP with py-spy: defaults and raw+auto; netlink with the sequence-number fix
for side in p4 new old; do
  cd /tmp/wt-$side || exit 1
  /usr/bin/python3 bench/vm_daemons.py --checks tcp --n 10000 --daemons healthd --kills 0 --window 10 --startup-limit 300 --json /tmp/s6p4/rss-$side/vm-rss.json >/tmp/s6p4/rss-$side.log 2>&1
done
cd /tmp/wt-p4
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults healthd:auto --n 1000 --window 20 --kills 20 --profile /opt/healthd-bench/venv/bin/py-spy --json /tmp/s6p4/tcp/vm-tcp.json >/tmp/s6p4/tcp.log 2>&1
PYTHONPATH=/tmp/wt-p4 .venv/bin/python bench/vm_netlink.py --n 1000 --repeat 1 --pyroute2 1000 --json /tmp/s6p4/netlink/vm-netlink.json >/tmp/s6p4/netlink.log 2>&1
