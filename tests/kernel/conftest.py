"""Fixtures for tests that need a real kernel with IPVS (run them with tests/vm/run).

* ``nat_topo`` / ``dr_topo``: topologies from ``netns.py``, built once per test module and
  reset before every test (backends up and healthy, no black hole, no UDP echo).
* ``ipvsadm``: an ``ipvsadm.Ipvsadm``; ``ipvsadm()`` returns the parsed ``ipvsadm -Ln``
  table, ``ipvsadm(stats=True)`` adds the counters; also ``.run()``, ``.restore()``.

Outside the VM (no root or no IPVS) the kernel tests are skipped, unless HEALTHD_VM=1 says
we are in the VM: then a missing IPVS is a broken test bed, and the session fails.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers next to this file are plain modules, not a package; make them importable
# whatever pytest's --import-mode is (the project uses importlib, which leaves sys.path
# alone). Test modules here are imported after this conftest, so they can import them too.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from ipvsadm import Ipvsadm  # noqa: E402
from netns import DrTopology, NatTopology, dr_topology, nat_topology  # noqa: E402


def pytest_collection_finish(session: pytest.Session) -> None:
    """Drop hypothesis's pytest plugin when no collected test imported hypothesis.

    The plugin imports all of hypothesis in its terminal summary even when no test uses it,
    which costs ~10 s in the TCG guest (25 % of a test bed run). Nothing is lost: its other
    hooks only act on hypothesis tests.
    """
    if "hypothesis" not in sys.modules:
        plugin = session.config.pluginmanager.get_plugin("hypothesispytest")
        if plugin is not None:
            session.config.pluginmanager.unregister(plugin)


def _not_ready_reason() -> str | None:
    if os.geteuid() != 0:
        return "not running as root"
    if not Path("/proc/net/ip_vs").exists():
        return "IPVS is not available (/proc/net/ip_vs missing; is ip_vs loaded?)"
    return None


@pytest.fixture(scope="session", autouse=True)
def _kernel_ready() -> None:
    reason = _not_ready_reason()
    if reason is None:
        return
    if os.environ.get("HEALTHD_VM") == "1":
        pytest.exit(f"kernel tests in the VM (HEALTHD_VM=1), but {reason}", returncode=1)
    pytest.skip(f"kernel test: {reason}; run under tests/vm/run")


@pytest.fixture(scope="session")
def ipvsadm(_kernel_ready: None) -> Ipvsadm:
    return Ipvsadm()


def _ipvs_has_services() -> bool:
    lines = Path("/proc/net/ip_vs").read_text().splitlines()
    return any(line.split()[0] in ("TCP", "UDP", "SCTP", "FWM") for line in lines if line.strip())


@pytest.fixture
def _ipvs_clean(ipvsadm: Ipvsadm) -> Iterator[None]:
    """Safety net: flush IPVS after a test that left services behind."""
    yield
    if _ipvs_has_services():
        ipvsadm.clear()


@pytest.fixture(scope="module")
def _nat_topo_module(_kernel_ready: None) -> Iterator[NatTopology]:
    topo = nat_topology(n=3)
    yield topo
    topo.teardown()


@pytest.fixture
def nat_topo(_nat_topo_module: NatTopology, _ipvs_clean: None) -> NatTopology:
    _nat_topo_module.reset()
    return _nat_topo_module


@pytest.fixture(scope="module")
def _dr_topo_module(_kernel_ready: None) -> Iterator[DrTopology]:
    topo = dr_topology(n=2)
    yield topo
    topo.teardown()


@pytest.fixture
def dr_topo(_dr_topo_module: DrTopology, _ipvs_clean: None) -> DrTopology:
    _dr_topo_module.reset()
    return _dr_topo_module
