#!/bin/bash
# inside the VM: healthd at N=1000, old (07d19c9) then new (HEAD), then old again, same boot
for d in /tmp/wt-old /work/main /tmp/wt-old /work/main; do
  echo "== $d"
  /usr/bin/python3 $d/bench/vm_daemons.py --checks http --daemons healthd --n 1000 --window 20 --kills 0 --json /tmp/ab/$(basename $d)-$RANDOM.json 2>&1 | grep -v "^\s*$" | tail -2
done
