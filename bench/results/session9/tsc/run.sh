#!/bin/bash
# On the host: one boot with the TSC as the guest's clock source.
mkdir -p /tmp/s9tsc
tests/vm/run --timeout 2400 --mem 2G --rwdir /tmp/s9tsc --append tsc=reliable --append clocksource=tsc -- \
    /work/main/.venv/bin/python bench/vm_daemons.py --daemons keepalived healthd healthd-defaults \
    --checks tcp --n 1000 100 --kills 20 --json /tmp/s9tsc/vm-tcp.json > /tmp/s9tsc/out.log 2>&1
