#!/bin/bash
cd /tmp/wt4
.venv/bin/python -m pytest -p no:cacheprovider -m kernel tests/kernel -q 2>&1 | tail -3
PYTHONPATH=/tmp/wt4 .venv/bin/python bench/vm_netlink.py --n 1000 --pyroute2 1000 --json /tmp/s5q/vm-netlink.json
/usr/bin/python3 bench/vm_daemons.py --checks tcp --n 1000 --daemons keepalived healthd-pyroute2 healthd-defaults --kills 20 --json /tmp/s5q/vm-tcp.json
