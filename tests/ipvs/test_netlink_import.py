"""The netlink adapter imports pyroute2's IPVS socket without the rest of pyroute2 (its package
``__init__`` imports every module it has, 8 MB), and pyroute2's own names still work after."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from healthd.ipvs.netlink import enter_pyroute2
enter_pyroute2()
from pyroute2.ipvs import AsyncIPVS
from pyroute2.netlink.exceptions import NetlinkError
lean = sorted(m for m in sys.modules if m.startswith("pyroute2"))
print(len(lean), "pyroute2.ndb.main" in sys.modules, "sqlite3" in sys.modules)
from pyroute2 import IPRoute, AsyncIPVS as Same
print(Same is AsyncIPVS, IPRoute.__name__, "pyroute2.ndb.main" in sys.modules)
"""


def test_the_adapter_loads_only_what_the_ipvs_socket_needs_and_the_rest_on_demand() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    count, ndb, sqlite = out[0].split()
    assert int(count) < 60 and ndb == "False" and sqlite == "False"
    # a plain ``from pyroute2 import ...`` afterwards gets the whole package, the same classes
    assert out[1] == "True IPRoute True"
