"""pyroute2 and aiohttp are entered without their package ``__init__`` (``healthd.bare``): the
daemon loads only the modules it uses (pyroute2's IPVS socket, aiohttp's server), and the
packages' own names still work after, for any other importer in the process."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> list[str]:
    """``code``'s output lines, run in a fresh interpreter (imports are once per process)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")


PYROUTE2 = """
import sys
from healthd import bare
bare.enter("pyroute2")
from pyroute2.ipvs import AsyncIPVS
from pyroute2.netlink.exceptions import NetlinkError
lean = sorted(m for m in sys.modules if m.startswith("pyroute2"))
print(len(lean), "pyroute2.ndb.main" in sys.modules, "sqlite3" in sys.modules)
from pyroute2 import IPRoute, AsyncIPVS as Same
print(Same is AsyncIPVS, IPRoute.__name__, "pyroute2.ndb.main" in sys.modules)
"""


def test_the_adapter_loads_only_what_the_ipvs_socket_needs_and_the_rest_on_demand() -> None:
    out = run(PYROUTE2)
    count, ndb, sqlite = out[0].split()
    assert int(count) < 60 and ndb == "False" and sqlite == "False"
    # a plain ``from pyroute2 import ...`` afterwards gets the whole package, the same classes
    assert out[1] == "True IPRoute True"


AIOHTTP = """
import sys
import healthd.daemon, healthd.api, healthd.control.server
from healthd.serving import web
client = [m for m in ("aiohttp.client", "aiohttp.connector", "aiohttp.cookiejar")
          if m in sys.modules]
print(client, web.Application.__module__)
import aiohttp
from aiohttp.http import SERVER_SOFTWARE
print(SERVER_SOFTWARE.split()[-1] == "aiohttp/" + aiohttp.__version__)
session = aiohttp.ClientSession
print(session.__module__, aiohttp.web is web, "aiohttp.connector" in sys.modules)
"""


def test_the_daemon_serves_with_aiohttp_without_loading_its_client() -> None:
    out = run(AIOHTTP)
    assert out[0] == "[] aiohttp.web_app"
    # the Server header names aiohttp's real version (read from its __init__'s source)
    assert out[1] == "True"
    # aiohttp's own names afterwards: the whole package, the same modules
    assert out[2] == "aiohttp.client True True"
