"""Unit tests for the ipvsadm output parser (host only, no kernel needed).

The samples are real output of ipvsadm 1.31 on the test VM's 6.1 kernel (captured with
tests/vm/run; trailing blanks included, as ipvsadm prints them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))

from ipvsadm import ParseError, merge_stats, parse_list, parse_stats

# ipvsadm -A -t 10.0.0.1:80 -s rr + 3 x -m (weights 1, 0, 100); -t 10.0.0.1:443 -s lc -p 60
# -M 255.255.255.0; -t 10.20.0.100:80 -s mh (no real server); -u 10.0.0.1:53 -s wrr -o;
# -t [fd00:0:0:1::1]:80 -s wlc -p 300; -f 1 -s sh -b sh-fallback,sh-port with -g and -i.
MIXED_LIST = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:80 rr
  -> 192.168.1.101:80             Masq    1      0          0         
  -> 192.168.1.102:80             Masq    0      0          0         
  -> 192.168.1.103:8080           Masq    100    0          0         
TCP  10.0.0.1:443 lc persistent 60 mask 255.255.255.0
  -> 127.0.0.1:443                Masq    1      0          0         
TCP  10.20.0.100:80 mh
UDP  10.0.0.1:53 wrr ops
  -> 192.168.1.101:5353           Masq    5      0          0         
TCP  [fd00:0:0:1::1]:80 wlc persistent 300
  -> [fd00:0:0:2::101]:80         Masq    1      0          0         
  -> [fd00:0:0:2::102]:80         Masq    2      0          0         
FWM  1 sh (sh-fallback,sh-port)
  -> 10.20.0.11:0                 Route   1      0          0         
  -> 10.20.0.12:0                 Tunnel  3      0          0         
"""

MIXED_STATS = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                         0        0        0        0        0
  -> 192.168.1.101:80                    0        0        0        0        0
  -> 192.168.1.102:80                    0        0        0        0        0
  -> 192.168.1.103:8080                  0        0        0        0        0
TCP  10.0.0.1:443                        0        0        0        0        0
  -> 127.0.0.1:443                       0        0        0        0        0
TCP  10.20.0.100:80                      0        0        0        0        0
UDP  10.0.0.1:53                         0        0        0        0        0
  -> 192.168.1.101:5353                  0        0        0        0        0
TCP  [fd00:0:0:1::1]:80                  0        0        0        0        0
  -> [fd00:0:0:2::101]:80                0        0        0        0        0
  -> [fd00:0:0:2::102]:80                0        0        0        0        0
FWM  1                                   0        0        0        0        0
  -> 10.20.0.11:0                        0        0        0        0        0
  -> 10.20.0.12:0                        0        0        0        0        0
"""

# NAT (IPv4 + IPv6) and DR services after 12 + 4 + 6 requests through the VIPs.
TRAFFIC_LIST = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:80 rr
  -> 192.168.1.101:80             Masq    1      0          4         
  -> 192.168.1.102:80             Masq    1      0          4         
  -> 192.168.1.103:80             Masq    2      0          4         
TCP  10.20.0.100:80 rr
  -> 10.20.0.11:80                Route   1      0          3         
  -> 10.20.0.12:80                Route   1      0          3         
TCP  [fd00:0:0:1::1]:80 wrr
  -> [fd00:0:0:2::101]:80         Masq    1      0          2         
  -> [fd00:0:0:2::102]:80         Masq    1      0          2         
"""

TRAFFIC_STATS = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                        12       73       72     4756     6360
  -> 192.168.1.101:80                    4       25       24     1620     2120
  -> 192.168.1.102:80                    4       24       24     1568     2120
  -> 192.168.1.103:80                    4       24       24     1568     2120
TCP  10.20.0.100:80                      6       36        0     2370        0
  -> 10.20.0.11:80                       3       18        0     1185        0
  -> 10.20.0.12:80                       3       18        0     1185        0
TCP  [fd00:0:0:1::1]:80                  4       24       24     2076     2600
  -> [fd00:0:0:2::101]:80                2       12       12     1038     1300
  -> [fd00:0:0:2::102]:80                2       12       12     1038     1300
"""

EMPTY = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
"""


def test_mixed_services_and_forwarding_methods() -> None:
    table = parse_list(MIXED_LIST)
    assert list(table) == [
        "TCP 10.0.0.1:80",
        "TCP 10.0.0.1:443",
        "TCP 10.20.0.100:80",
        "UDP 10.0.0.1:53",
        "TCP [fd00:0:0:1::1]:80",
        "FWM 1",
    ]
    nat = table["TCP 10.0.0.1:80"]
    assert nat["scheduler"] == "rr"
    assert nat["flags"] == []
    assert nat["persistent"] is None
    assert nat["real_servers"] == {
        "192.168.1.101:80": {"forward": "Masq", "weight": 1, "active": 0, "inactive": 0},
        "192.168.1.102:80": {"forward": "Masq", "weight": 0, "active": 0, "inactive": 0},
        "192.168.1.103:8080": {"forward": "Masq", "weight": 100, "active": 0, "inactive": 0},
    }
    persistent = table["TCP 10.0.0.1:443"]
    assert persistent["scheduler"] == "lc"
    assert persistent["persistent"] == 60
    assert persistent["flags"] == ["persistent", "60", "mask", "255.255.255.0"]
    assert table["TCP 10.20.0.100:80"] == {
        "scheduler": "mh",
        "flags": [],
        "persistent": None,
        "real_servers": {},
    }
    udp = table["UDP 10.0.0.1:53"]
    assert (udp["scheduler"], udp["flags"]) == ("wrr", ["ops"])
    assert udp["real_servers"]["192.168.1.101:5353"]["weight"] == 5
    v6 = table["TCP [fd00:0:0:1::1]:80"]
    assert (v6["scheduler"], v6["persistent"]) == ("wlc", 300)
    assert set(v6["real_servers"]) == {"[fd00:0:0:2::101]:80", "[fd00:0:0:2::102]:80"}
    fwm = table["FWM 1"]
    assert (fwm["scheduler"], fwm["flags"]) == ("sh", ["(sh-fallback,sh-port)"])
    assert fwm["real_servers"] == {
        "10.20.0.11:0": {"forward": "Route", "weight": 1, "active": 0, "inactive": 0},
        "10.20.0.12:0": {"forward": "Tunnel", "weight": 3, "active": 0, "inactive": 0},
    }


def test_connection_counts_after_traffic() -> None:
    table = parse_list(TRAFFIC_LIST)
    rs = table["TCP 10.0.0.1:80"]["real_servers"]
    assert {k: (v["active"], v["inactive"]) for k, v in rs.items()} == {
        "192.168.1.101:80": (0, 4),
        "192.168.1.102:80": (0, 4),
        "192.168.1.103:80": (0, 4),
    }
    assert rs["192.168.1.103:80"]["weight"] == 2
    dr = table["TCP 10.20.0.100:80"]["real_servers"]
    assert {v["forward"] for v in dr.values()} == {"Route"}


def test_stats() -> None:
    stats = parse_stats(TRAFFIC_STATS)
    svc, rs = stats["TCP 10.0.0.1:80"]
    assert svc == {"conns": 12, "inpkts": 73, "outpkts": 72, "inbytes": 4756, "outbytes": 6360}
    assert rs["192.168.1.101:80"] == {
        "conns": 4,
        "inpkts": 25,
        "outpkts": 24,
        "inbytes": 1620,
        "outbytes": 2120,
    }
    dr_svc, _ = stats["TCP 10.20.0.100:80"]
    assert dr_svc["outpkts"] == 0  # DR: replies bypass the director
    v6_svc, v6_rs = stats["TCP [fd00:0:0:1::1]:80"]
    assert v6_svc["conns"] == 4
    assert set(v6_rs) == {"[fd00:0:0:2::101]:80", "[fd00:0:0:2::102]:80"}


def test_stats_of_every_service_kind() -> None:
    stats = parse_stats(MIXED_STATS)
    assert set(stats) == set(parse_list(MIXED_LIST))
    assert set(stats["FWM 1"][1]) == {"10.20.0.11:0", "10.20.0.12:0"}
    assert stats["TCP 10.20.0.100:80"][1] == {}


def test_merge_stats() -> None:
    table = merge_stats(parse_list(TRAFFIC_LIST), parse_stats(TRAFFIC_STATS))
    svc = table["TCP 10.0.0.1:80"]
    assert svc["stats"]["conns"] == 12
    assert svc["real_servers"]["192.168.1.102:80"]["stats"]["conns"] == 4
    assert svc["real_servers"]["192.168.1.102:80"]["weight"] == 1


def test_merge_ignores_services_that_changed_in_between() -> None:
    assert merge_stats(parse_list(EMPTY), parse_stats(TRAFFIC_STATS)) == {}


def test_empty_table() -> None:
    assert parse_list(EMPTY) == {}
    assert parse_list("") == {}


def test_large_numbers_without_exact() -> None:
    # Synthetic: without --exact, ipvsadm abbreviates very large counters with K/M/G/T.
    text = "TCP  10.0.0.1:80    12    150K    2M    1G    3T\n"
    svc, _ = parse_stats(text)["TCP 10.0.0.1:80"]
    assert svc == {
        "conns": 12,
        "inpkts": 150_000,
        "outpkts": 2_000_000,
        "inbytes": 10**9,
        "outbytes": 3 * 10**12,
    }


@pytest.mark.parametrize(
    "text",
    [
        "  -> 192.168.1.101:80             Masq    1      0          0\n",  # no service
        "TCP  10.0.0.1:80 rr\n  -> 192.168.1.101:80 Masq 1\n",  # short line
        "bogus line\n",
        "TCP\n",
    ],
)
def test_garbage_is_rejected(text: str) -> None:
    with pytest.raises(ParseError):
        parse_list(text)


def test_garbage_stats_are_rejected() -> None:
    with pytest.raises(ParseError):
        parse_stats("TCP  10.0.0.1:80   12  x  1  2  3\n")
