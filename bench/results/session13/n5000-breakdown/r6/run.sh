#!/bin/bash
cd /work/main
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --n 5000 --window 20 --kills 20 --profile /opt/healthd-bench/venv/bin/py-spy --profile-kills --json /tmp/s13/r6/vm-tcp.json >/tmp/s13/r6/out.log 2>&1
echo done
