#!/bin/bash
# session 8: b83dcd6 (new) at N = 100 and 500 (keepalived, all defaults), and a00fe08 (old: auto moves to two workers at once) at N = 500, all defaults; both driven by b83dcd6's vm_daemons.py (--settle 80)
cd /tmp/wt-new
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons keepalived healthd-defaults --n 100 500 --window 20 --kills 20 --json /tmp/s8f/new/vm-tcp.json >/tmp/s8f/new.log 2>&1
cd /tmp/wt-old
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --n 500 --window 20 --kills 20 --json /tmp/s8f/old/vm-tcp.json >/tmp/s8f/old.log 2>&1
