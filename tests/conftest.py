"""Fixtures shared by the host tests of the scheduler and the probe workers."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pytest

# tests/probing.py, shared helpers, importable as ``probing`` whatever pytest's --import-mode is
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback port that accepts connections (nobody accepts them: the backlog does)."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as server:
        server.setblocking(False)
        yield server.getsockname()[1]


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: new SYNs go unanswered, so a connect to it
    stays in progress for as long as a test needs."""
    from probing import full_listener

    server, fillers = full_listener(3)
    try:
        yield server.getsockname()[1]
    finally:
        for sock in (server, *fillers):
            sock.close()
