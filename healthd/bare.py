"""Third-party packages entered without their package ``__init__``: only the modules used load.

Two of healthd's libraries import everything they have from their ``__init__``:

* pyroute2: every public class (NDB with sqlite3, IPDB, the wireless, conntrack and plan9
  sockets: ~160 modules, 8 MB of the daemon's memory), where the netlink adapter needs
  ``pyroute2.ipvs`` (~40 modules, 2 MB);
* aiohttp: its client (connector, cookie jar, client requests and websockets, tracing, the
  resolver with aiohappyeyeballs, ...) besides its server, ~4 MB, where healthd only serves
  (``/metrics``, the API, the control socket); the HTTP probes are h11's.

``enter(name)`` puts the package in ``sys.modules`` bare: ``import name.sub`` then loads that
submodule and what it imports.  The first name asked of the package that is not one of its
submodules (``from pyroute2 import IPRoute``, ``aiohttp.ClientSession`` anywhere in the process)
runs its ``__init__`` then, as a plain import would have.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from typing import Any

_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def enter(name: str, *, version: bool = False) -> None:
    """Enter package ``name`` bare (nothing when it is imported already, or not installed).

    ``version``: its submodules import ``__version__`` from it (aiohttp's do), so it is set
    from the ``__init__``'s source, where it must be one literal line; when it is not, the
    package is left alone (the plain import follows)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.origin is None:
        return  # not installed: the import that follows says so
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    if version:
        try:
            with open(spec.origin, encoding="utf-8") as source:
                found = _VERSION.search(source.read())
        except OSError:
            return
        if found is None:
            return
        package.__version__ = found.group(1)  # type: ignore[attr-defined]

    def __getattr__(attr: str) -> Any:
        if not attr.startswith("__") and importlib.util.find_spec(f"{name}.{attr}"):
            return importlib.import_module(f"{name}.{attr}")  # a submodule: just that
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, attr)

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = package
