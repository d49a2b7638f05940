"""Pure helpers: status ranges, body regex, detail wording."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthd.probes import matchers


@pytest.mark.parametrize(
    ("status", "ranges", "expected"),
    [
        pytest.param(200, ((200, 299),), True, id="low-edge"),
        pytest.param(299, ((200, 299),), True, id="high-edge"),
        pytest.param(300, ((200, 299),), False, id="just-above"),
        pytest.param(199, ((200, 299),), False, id="just-below"),
        pytest.param(404, ((404, 404),), True, id="single-code"),
        pytest.param(301, ((200, 299), (301, 302)), True, id="second-range"),
        pytest.param(503, ((200, 299), (301, 302)), False, id="in-none"),
        pytest.param(200, (), False, id="no-ranges"),
    ],
)
def test_status_matches(status: int, ranges: tuple[tuple[int, int], ...], expected: bool) -> None:
    assert matchers.status_matches(status, ranges) is expected


@given(st.integers(100, 599), st.integers(100, 599), st.integers(100, 599))
def test_status_matches_is_inclusive_range(status: int, a: int, b: int) -> None:
    low, high = min(a, b), max(a, b)
    assert matchers.status_matches(status, ((low, high),)) is (low <= status <= high)


@pytest.mark.parametrize(
    ("body", "pattern", "expected"),
    [
        pytest.param(b'{"status": "UP"}', r'"status":\s*"UP"', True, id="json"),
        pytest.param(b"all good\n", "^all", True, id="anchored-start"),
        pytest.param(b"xx all good", "^all", False, id="anchor-misses"),
        pytest.param(b"status DOWN", "UP", False, id="mismatch"),
        pytest.param(b"caf\xc3\xa9 ok", "café", True, id="utf8"),
        pytest.param(b"\xff\xfe ok", "ok", True, id="invalid-utf8-replaced"),
        pytest.param(b"\xff", "\ufffd", True, id="replacement-char"),
        pytest.param(b"", "", True, id="empty"),
    ],
)
def test_body_matches(body: bytes, pattern: str, expected: bool) -> None:
    assert matchers.body_matches(body, pattern) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("backend.test", "backend.test", id="name"),
        pytest.param("backend.test:8443", "backend.test", id="name-port"),
        pytest.param("192.0.2.1:80", "192.0.2.1", id="ipv4-port"),
        pytest.param("[2001:db8::1]:443", "2001:db8::1", id="ipv6-port"),
        pytest.param("[2001:db8::1]", "2001:db8::1", id="ipv6-brackets"),
        pytest.param("2001:db8::1", "2001:db8::1", id="ipv6-bare"),
    ],
)
def test_host_without_port(host: str, expected: str) -> None:
    assert matchers.host_without_port(host) == expected


@pytest.mark.parametrize(
    ("data", "truncated", "expected"),
    [
        pytest.param(b"ok\n", False, "ok", id="strip"),
        pytest.param(b"  one\ntwo\r\n\n three \n", False, "one | two | three", id="lines"),
        pytest.param(b"\xffbad", False, "\ufffdbad", id="replace"),
        pytest.param(b"yyyy", True, "yyyy [truncated]", id="truncated"),
        pytest.param(b"", False, "", id="empty"),
    ],
)
def test_format_output(data: bytes, truncated: bool, expected: str) -> None:
    assert matchers.format_output(data, truncated) == expected


@pytest.mark.parametrize(
    ("returncode", "output", "expected"),
    [
        pytest.param(0, "", "exit 0", id="ok-silent"),
        pytest.param(2, "disk full", "exit 2: disk full", id="exit-output"),
        pytest.param(-9, "", "killed by signal 9 (SIGKILL)", id="sigkill"),
        pytest.param(-15, "bye", "killed by signal 15 (SIGTERM): bye", id="sigterm-output"),
        pytest.param(-200, "", "killed by signal 200 (signal 200)", id="unknown-signal"),
    ],
)
def test_exit_text(returncode: int, output: str, expected: str) -> None:
    assert matchers.exit_text(returncode, output) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        pytest.param(1.0, "timed out after 1s", id="whole"),
        pytest.param(0.5, "timed out after 0.5s", id="fraction"),
        pytest.param(2.25, "timed out after 2.25s", id="two-places"),
    ],
)
def test_timeout_text(seconds: float, expected: str) -> None:
    assert matchers.timeout_text(seconds) == expected


def test_detail_wording() -> None:
    assert (
        matchers.detail("HTTP GET 192.168.1.102:80/healthz", matchers.status_text(503))
        == "HTTP GET 192.168.1.102:80/healthz: status 503"
    )
    assert matchers.body_mismatch_text("UP") == "body does not match 'UP'"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(OSError(113, "No route to host"), "no route to host", id="strerror"),
        pytest.param(OSError("plain message"), "plain message", id="no-errno"),
        pytest.param(OSError(), "OSError", id="empty"),
    ],
)
def test_os_error_text(exc: OSError, expected: str) -> None:
    assert matchers.os_error_text(exc) == expected
