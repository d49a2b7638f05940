#!/bin/bash
# fourteenth pass: where false timeouts at N = 5000 come from (conntrack? listen drops?), close graceful then reset
cd /work/main
diag() {
  echo "== $1"
  for f in nf_conntrack_count nf_conntrack_max; do echo "$f $(cat /proc/sys/net/netfilter/$f 2>/dev/null)"; done
  lsmod | grep -E "nf_conntrack|ip_vs" | head -5
  nstat -az 2>/dev/null | grep -E "ListenDrops|ListenOverflows|TCPTimeouts|TcpExtTCPSynRetrans|TCPReqQFullDrop|TCPReqQFullDoCookies|TcpActiveOpens|TcpAttemptFails|TcpExtTW " 
  dmesg | grep -iE "conntrack|table full|time wait|SYN flood" | tail -5
}
diag start
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --tcp-close graceful --n 5000 --window 20 --kills 20 --json /tmp/s14/v5/graceful.json >/tmp/s14/v5/out-graceful.log 2>&1
diag after-graceful
/usr/bin/python3 bench/vm_daemons.py --checks tcp --daemons healthd-defaults --tcp-close reset --n 5000 --window 20 --kills 20 --json /tmp/s14/v5/reset.json >/tmp/s14/v5/out-reset.log 2>&1
diag after-reset
echo done
