#!/bin/sh
cd /work/main && /usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd-defaults --n 5000 --window 20 --kills 20 --json /tmp/s16/net1/x.json
