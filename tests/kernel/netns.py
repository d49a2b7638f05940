"""Build LVS test topologies out of network namespaces (runs as root inside the test VM).

Stdlib only. Everything we create is named with a ``hd-`` prefix, so teardown and stale
cleanup only ever touch our own namespaces, links and processes.

Process starts are expensive under qemu TCG (~60-120 ms each, ``python3`` ~2 s), so:

* ``ip`` commands are batched (``ip -batch -``), one process per namespace, run in parallel;
* sysctls, sockets and "is it listening?" checks are done in-process, from a short-lived
  thread that has ``setns()``-ed into the namespace (a socket keeps the namespace it was
  created in);
* probes from the director (``tcp_probe``, ``http_get``, ``udp_request``) use sockets, not
  processes. Only the client traffic helper uses ``curl`` (one process for N requests).

Backends are ``busybox httpd`` serving a page whose body is the backend's name and a
``/healthz`` file (200). busybox httpd only runs CGI under ``/cgi-bin/`` and this build has
no reverse proxy, so it cannot answer 503 on ``/healthz`` itself: the 503 mode swaps the
httpd for ``busybox nc -ll -e`` running a small busybox-sh responder (``/healthz`` -> 503,
anything else -> 200 with the name). By default both listen dual-stack on ``*:PORT``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")

PREFIX = "hd-"
NETNS_DIR = Path("/run/netns")
HEALTH_PATH = "/healthz"
#: Key counted by ``http_requests`` for a request that got no HTTP answer at all.
NO_ANSWER = "!no-answer"

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A topology command failed; the message says which one and why."""


# --------------------------------------------------------------------------------------
# Running things: ip batches, commands, code inside a namespace
# --------------------------------------------------------------------------------------


def _fmt_cmd(argv: Sequence[str]) -> str:
    return " ".join(argv)


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = 30) -> str:
    """Run a command (check=True); return its stdout. Raises NetnsError with stderr."""
    try:
        p = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"`{_fmt_cmd(argv)}` timed out after {timeout} s") from e
    except FileNotFoundError as e:
        raise NetnsError(f"`{_fmt_cmd(argv)}`: {argv[0]} not installed") from e
    if p.returncode != 0:
        raise NetnsError(
            f"`{_fmt_cmd(argv)}` failed (exit {p.returncode}): {p.stderr.strip() or p.stdout}"
            + (f"\n--- input:\n{input}" if input else "")
        )
    return p.stdout


def _batch_argv(netns: str | None) -> list[str]:
    return ["ip", *(["-n", netns] if netns else []), "-batch", "-"]


def _batch_error(netns: str | None, lines: Sequence[str], stderr: str, rc: int) -> NetnsError:
    where = f"in netns {netns}" if netns else "in the root netns"
    failed = ""
    m = re.search(r"Command failed -:(\d+)", stderr)
    if m and 0 < int(m.group(1)) <= len(lines):
        failed = f" at `ip {lines[int(m.group(1)) - 1]}`"
    return NetnsError(f"ip -batch {where} failed (exit {rc}){failed}: {stderr.strip()}")


def ip_batch(lines: Sequence[str], netns: str | None = None) -> None:
    """Run ``ip`` commands (without the leading ``ip``) in one process, in ``netns``."""
    if lines:
        run_parallel_batches({netns: list(lines)})


def run_parallel_batches(batches: dict[str | None, list[str]]) -> None:
    """Run one ``ip -batch`` per namespace, all at once; the root netns (key None) first."""
    if batches.get(None):
        _run_batches({None: batches[None]})
    _run_batches({ns: lines for ns, lines in batches.items() if ns is not None and lines})


def _run_batches(batches: dict[str | None, list[str]]) -> None:
    procs = []
    for ns, lines in batches.items():
        p = subprocess.Popen(
            _batch_argv(ns),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((ns, lines, p))
    errors = []
    for ns, lines, p in procs:
        try:
            _, stderr = p.communicate("\n".join(lines) + "\n", timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            errors.append(NetnsError(f"ip -batch in {ns or 'root netns'} timed out"))
            continue
        if p.returncode != 0:
            errors.append(_batch_error(ns, lines, stderr, p.returncode))
    if errors:
        raise errors[0]


def run_in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a thread that has joined ``netns`` (None: the current namespace).

    Sockets created by ``fn`` stay in ``netns``; writes to /proc/sys/net go to ``netns``.
    The thread ends afterwards, so the caller's namespace never changes.
    """
    if netns is None:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            error.append(NetnsError(f"network namespace {netns!r} does not exist"))
            return
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                error.append(NetnsError(f"setns({netns}): {os.strerror(err)}"))
                return
        finally:
            os.close(fd)
        try:
            result.append(fn())
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=target, name=f"in-netns-{netns}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def set_sysctls(netns: str | None, values: dict[str, str | int]) -> None:
    """Set sysctls (``net.ipv4.ip_forward`` style keys) in ``netns``, without a process."""

    def write() -> None:
        for key, value in values.items():
            path = Path("/proc/sys", *key.split("."))
            try:
                path.write_text(f"{value}\n")
            except OSError as e:
                raise NetnsError(f"sysctl {key}={value} in {netns or 'root'}: {e}") from e

    run_in_netns(netns, write)


# --------------------------------------------------------------------------------------
# Namespaces, links, addresses, routes
# --------------------------------------------------------------------------------------


class IpBatch:
    """Collects ``ip`` commands per namespace; ``run()`` executes them with few processes.

    Root-namespace commands run first (they create the namespaces and veths), then one
    ``ip -n NS -batch`` per namespace, in parallel.
    """

    def __init__(self) -> None:
        self.lines: dict[str | None, list[str]] = {}

    def cmd(self, line: str, netns: str | None = None) -> IpBatch:
        self.lines.setdefault(netns, []).append(line)
        return self

    def netns_add(self, name: str) -> IpBatch:
        self.cmd(f"netns add {name}")
        return self.cmd("link set lo up", netns=name)

    def bridge(self, name: str, netns: str | None = None) -> IpBatch:
        self.cmd(f"link add {name} type bridge", netns)
        return self.cmd(f"link set {name} up", netns)

    def veth(
        self,
        name: str,
        peer: str,
        *,
        peer_netns: str | None = None,
        master: str | None = None,
    ) -> IpBatch:
        """veth ``name`` (root netns, optionally enslaved to ``master``) <-> ``peer``."""
        where = f" netns {peer_netns}" if peer_netns else ""
        self.cmd(f"link add {name} type veth peer name {peer}{where}")
        self.cmd(f"link set {name}{f' master {master}' if master else ''} up")
        return self.cmd(f"link set {peer} up", netns=peer_netns)

    def addr(self, dev: str, cidr: str, netns: str | None = None) -> IpBatch:
        """Add an IPv4 or IPv6 address (IPv6 without DAD, so it is usable at once)."""
        nodad = " nodad" if ":" in cidr else ""
        return self.cmd(f"addr add {cidr} dev {dev}{nodad}", netns)

    def route(self, dst: str, via: str, netns: str | None = None) -> IpBatch:
        """Add a route; ``dst="default"`` works for both families (no ``-6`` in batches)."""
        if dst == "default" and ":" in via:
            dst = "::/0"
        return self.cmd(f"route add {dst} via {via}", netns)

    def run(self) -> None:
        run_parallel_batches(self.lines)
        self.lines = {}


def add_netns(name: str) -> None:
    IpBatch().netns_add(name).run()


def del_netns(*names: str) -> None:
    """Delete namespaces, killing the processes still running in them first."""
    kill_netns_processes(names)
    ip_batch([f"netns del {n}" for n in names if (NETNS_DIR / n).exists()])


def add_bridge(name: str, netns: str | None = None) -> None:
    IpBatch().bridge(name, netns).run()


def add_veth(
    name: str, peer: str, *, peer_netns: str | None = None, master: str | None = None
) -> None:
    IpBatch().veth(name, peer, peer_netns=peer_netns, master=master).run()


def add_addr(dev: str, cidr: str, netns: str | None = None) -> None:
    IpBatch().addr(dev, cidr, netns).run()


def add_route(dst: str, via: str, netns: str | None = None) -> None:
    IpBatch().route(dst, via, netns).run()


def kill_netns_processes(names: Iterable[str]) -> None:
    """SIGKILL every process whose network namespace is one of ``names`` (ours)."""
    inodes = set()
    for n in names:
        with contextlib.suppress(OSError):
            inodes.add(os.stat(NETNS_DIR / n).st_ino)
    if not inodes:
        return
    victims = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(pid_dir / "ns/net").st_ino in inodes:
                victims.append(int(pid_dir.name))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def cleanup(prefix: str) -> None:
    """Remove namespaces and root-netns links whose names start with ``prefix``."""
    if not prefix.startswith(PREFIX):
        raise ValueError(f"refusing to clean up names not starting with {PREFIX!r}")
    namespaces = sorted(p.name for p in NETNS_DIR.glob(f"{prefix}*"))
    links = sorted(p.name for p in Path("/sys/class/net").glob(f"{prefix}*"))
    if not namespaces and not links:
        return
    kill_netns_processes(namespaces)
    # Links first: deleting a veth end removes the pair at once, while the devices of a
    # deleted namespace go away asynchronously (and would clash with a quick rebuild).
    ip_batch([f"link del {link}" for link in links] + [f"netns del {n}" for n in namespaces])


# --------------------------------------------------------------------------------------
# Probes (in-process sockets)
# --------------------------------------------------------------------------------------

ProbeResult = Literal["open", "refused", "timeout", "unreachable", "error"]


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _socket(addr: str, kind: socket.SocketKind, netns: str | None) -> socket.socket:
    return run_in_netns(netns, lambda: socket.socket(_family(addr), kind))


def tcp_probe(addr: str, port: int, timeout: float = 1.0, netns: str | None = None) -> ProbeResult:
    """TCP connect from ``netns`` (default: the director): open/refused/timeout/unreachable."""
    with _socket(addr, socket.SOCK_STREAM, netns) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        except OSError as e:
            if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return "unreachable"
            return "error"
        return "open"


def http_get(
    addr: str, port: int = 80, path: str = "/", timeout: float = 2.0, netns: str | None = None
) -> tuple[int, str]:
    """One HTTP/1.0 GET from ``netns``; returns (status, body). Raises OSError if no answer."""
    host = f"[{addr}]" if ":" in addr else addr
    with _socket(addr, socket.SOCK_STREAM, netns) as s:
        s.settimeout(timeout)
        s.connect((addr, port))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/\d\.\d (\d{3})", head)
    if not m:
        raise OSError(f"bad HTTP response from {host}:{port}: {raw[:80]!r}")
    return int(m.group(1)), body.decode(errors="replace")


def udp_request(
    addr: str, port: int, payload: bytes, timeout: float = 1.0, netns: str | None = None
) -> bytes | None:
    """Send one datagram from ``netns``; return the reply, or None after ``timeout``."""
    with _socket(addr, socket.SOCK_DGRAM, netns) as s:
        s.settimeout(timeout)
        s.sendto(payload, (addr, port))
        try:
            return s.recv(65536)
        except (TimeoutError, ConnectionRefusedError):
            return None


_CURL_MARK = "\n@@hd-status:%{http_code}@@\n"
_CURL_MARK_RE = re.compile(r"(.*?)\n@@hd-status:(\d{3})@@\n", re.DOTALL)


def http_requests(netns: str, url: str, n: int, timeout: float = 2.0) -> Counter[str]:
    """Send ``n`` GETs to ``url`` from ``netns`` (one ``curl`` process, a new connection each).

    Returns a Counter of the answers: the body (a backend's name) for 2xx answers,
    ``"!http-<code>"`` for other statuses and ``NO_ANSWER`` for failed requests.
    """
    argv = ["ip", "netns", "exec", netns, "curl", "-s", "--max-time", f"{timeout:g}"]
    argv += ["--connect-timeout", f"{timeout:g}", "-w", _CURL_MARK, *[url] * n]
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=n * (timeout + 1) + 10, check=False
        )
        out = p.stdout
    except subprocess.TimeoutExpired as e:
        raw = e.stdout or b""
        out = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    counts: Counter[str] = Counter()
    for body, code in _CURL_MARK_RE.findall(out):
        if code == "000":
            counts[NO_ANSWER] += 1
        elif code.startswith("2"):
            counts[body.strip()] += 1
        else:
            counts[f"!http-{code}"] += 1
    missing = n - sum(counts.values())
    if missing > 0:
        counts[NO_ANSWER] += missing
    return counts


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------

_RESPOND_503 = """\
# healthd test backend, 503 mode (run by busybox nc -ll -e for every connection):
# {health} -> 503, anything else -> 200 with the backend's name.
read -r method path version
while read -r line; do
    [ "${{#line}}" -le 1 ] && break
done
case $path in
{health} | {health}\\?*) status="503 Service Unavailable" body="unhealthy" ;;
*) status="200 OK" body={name} ;;
esac
printf 'HTTP/1.0 %s\\r\\nContent-Type: text/plain\\r\\nContent-Length: %d\\r\\n' \\
    "$status" "${{#body}}"
printf 'Connection: close\\r\\n\\r\\n%s' "$body"
"""

_NFT_BLACKHOLE = """\
table inet hd_blackhole {
    chain input {
        type filter hook input priority raw; policy accept;
        tcp flags & (syn | ack) == syn drop
        meta l4proto udp drop
    }
}
"""

ServerMode = Literal["up", "503", "down"]


def _listening(port: int, proto: Literal["tcp", "udp"] = "tcp") -> bool:
    """Is something bound to ``port`` in this thread's netns (LISTEN for TCP)?"""
    want_state = "0A" if proto == "tcp" else "07"
    for name in (proto, f"{proto}6"):
        try:
            lines = Path(f"/proc/thread-self/net/{name}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == want_state:
                return True
    return False


def wait_listening(netns: str | None, port: int, want: bool = True, timeout: float = 5.0) -> None:
    """Wait until a TCP listener on ``port`` in ``netns`` exists (or, want=False, is gone)."""

    def poll() -> bool:
        deadline = time.monotonic() + timeout
        while _listening(port) != want:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    if not run_in_netns(netns, poll):
        state = "listening" if want else "closed"
        raise NetnsError(f"port {port} in {netns or 'root netns'} not {state} after {timeout} s")


class UdpEcho:
    """A UDP echo server in a namespace: a thread in this process (no python3 start-up)."""

    def __init__(self, netns: str, port: int) -> None:
        self.netns = netns
        self.port = port
        self._stop = threading.Event()

        def bind() -> socket.socket:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", port))
            return s

        self._sock = run_in_netns(netns, bind)
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, name=f"udp-echo-{netns}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError):
                self._sock.sendto(data, peer)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@dataclass
class Backend:
    """A real server: ``busybox httpd`` in namespace ``netns`` answering with ``name``."""

    name: str
    netns: str
    addr: str
    addr6: str | None = None
    port: int = 80
    #: Listen address for httpd (``-p ADDR:PORT``); None: ``*:PORT``, both families. DR needs
    #: the wildcard (packets arrive for the VIP), and so does the NAT topology's IPv6 leg.
    bind: str | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hd-www-")))
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    mode: ServerMode = "down"
    blackholed: bool = False
    udp: UdpEcho | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        www = self.workdir / "www"
        www.mkdir(parents=True, exist_ok=True)
        (www / "index.html").write_text(self.name)
        (www / HEALTH_PATH.lstrip("/")).write_text("ok\n")
        (self.workdir / "respond503.sh").write_text(
            _RESPOND_503.format(health=HEALTH_PATH, name=self.name)
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def url(self, path: str = "/", v6: bool = False) -> str:
        host = f"[{self.addr6}]" if v6 else self.addr
        return f"http://{host}:{self.port}{path}"

    # -- server process ------------------------------------------------------------

    def _spawn(self, argv: list[str], mode: ServerMode) -> None:
        self.stop()
        with open(self.workdir / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.mode = mode

    def wait_ready(self) -> None:
        try:
            wait_listening(self.netns, self.port)
        except NetnsError as e:
            tail = (self.workdir / "server.log").read_text(errors="replace")[-500:]
            raise NetnsError(f"backend {self.name}: {e}; server log: {tail!r}") from e

    def start(self, wait: bool = True) -> None:
        """(Re)start ``busybox httpd -f -p PORT -h DIR`` (dual-stack); wait until listening."""
        listen = str(self.port)
        if self.bind:
            listen = (
                f"[{self.bind}]:{self.port}" if ":" in self.bind else f"{self.bind}:{self.port}"
            )
        www = str(self.workdir / "www")
        self._spawn(["busybox", "httpd", "-f", "-p", listen, "-h", www], "up")
        if wait:
            self.wait_ready()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server process (by PID); afterwards connects get RST (refused)."""
        p, self.process = self.process, None
        self.mode = "down"
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # httpd children serving a request may hold the listening socket a little longer.
        wait_listening(self.netns, self.port, want=False)

    def kill(self) -> None:
        """SIGKILL the server: the backend is down, connects are refused."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.start()

    def set_health(self, status: Literal[200, 503]) -> None:
        """Make ``/healthz`` answer ``status``; ``/`` keeps answering with the name.

        503 swaps httpd for a ``busybox nc -ll -e`` responder (always ``*:PORT``).
        """
        if status == 503:
            if self.mode != "503":
                script = str(self.workdir / "respond503.sh")
                self._spawn(
                    ["busybox", "nc", "-ll", "-p", str(self.port), "-e", "busybox", "sh", script],
                    "503",
                )
                self.wait_ready()
        elif self.mode != "up":
            self.start()

    # -- network faults ------------------------------------------------------------

    def blackhole(self) -> None:
        """Drop incoming TCP SYNs (and UDP) in the namespace: connects time out."""
        if not self.blackholed:
            run(["ip", "netns", "exec", self.netns, "nft", "-f", "-"], input=_NFT_BLACKHOLE)
            self.blackholed = True

    def unblackhole(self) -> None:
        if self.blackholed:
            run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    "nft",
                    "delete",
                    "table",
                    "inet",
                    "hd_blackhole",
                ]
            )
            self.blackholed = False

    # -- UDP -----------------------------------------------------------------------

    def start_udp_echo(self, port: int | None = None) -> UdpEcho:
        """Start a UDP echo server on ``port`` (default: the backend's port), dual-stack."""
        self.stop_udp_echo()
        self.udp = UdpEcho(self.netns, port or self.port)
        return self.udp

    def stop_udp_echo(self) -> None:
        if self.udp is not None:
            self.udp.stop()
            self.udp = None

    # -- lifecycle -----------------------------------------------------------------

    def reset(self) -> None:
        """Back to the default: httpd up and healthy, no black hole, no UDP echo."""
        self.unblackhole()
        self.stop_udp_echo()
        if self.mode != "up" or self.pid is None:
            self.start()

    def close(self) -> None:
        self.stop_udp_echo()
        with contextlib.suppress(NetnsError):
            self.stop(signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_backends(backends: Sequence[Backend]) -> None:
    """Start several backends in parallel, then wait for all of them."""
    for b in backends:
        b.start(wait=False)
    for b in backends:
        b.wait_ready()


# --------------------------------------------------------------------------------------
# Topologies
# --------------------------------------------------------------------------------------


@dataclass
class Topology:
    """Common parts: a client namespace, real servers, and what teardown removes."""

    prefix: str
    vip: str
    client_ns: str
    client_addr: str
    backends: list[Backend]
    port: int = 80
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def backend(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def vip_url(self, path: str = "/", vip: str | None = None) -> str:
        host = vip or self.vip
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{path}"

    def request(
        self, n: int, path: str = "/", vip: str | None = None, timeout: float = 2.0
    ) -> Counter[str]:
        """``n`` HTTP requests from the client namespace to the VIP: who answered."""
        return http_requests(self.client_ns, self.vip_url(path, vip), n, timeout)

    def reset(self) -> None:
        for b in self.backends:
            b.reset()

    def teardown(self) -> None:
        for b in self.backends:
            b.close()
        cleanup(self.prefix)


@dataclass
class NatTopology(Topology):
    """NAT (``-m``): director = root netns, client ``cl`` on a veth, real servers on a bridge.

    IPv4: client 10.0.0.2/24 -- director 10.0.0.254/24 + VIP 10.0.0.1/32 | bridge
    192.168.1.1/24 -- rsI 192.168.1.10I/24 (default route via the director).
    IPv6: client fd00:0:0:1::2/64 -- director fd00:0:0:1::fe/64 + VIP fd00:0:0:1::1/128 |
    bridge fd00:0:0:2::1/64 -- rsI fd00:0:0:2::10I/64.
    """

    vip6: str = "fd00:0:0:1::1"
    client_addr6: str = "fd00:0:0:1::2"
    director_client_addr: str = "10.0.0.254"
    director_client_addr6: str = "fd00:0:0:1::fe"
    director_rs_addr: str = "192.168.1.1"
    director_rs_addr6: str = "fd00:0:0:2::1"
    bridge: str = "hd-nat-br"


@dataclass
class DrTopology(Topology):
    """DR (``-g``): everything on one L2 bridge 10.20.0.0/24; the VIP is on every real
    server's ``lo`` (arp_ignore=1, arp_announce=2) and on the director's bridge."""

    director_addr: str = "10.20.0.1"
    bridge: str = "hd-dr-br"


def nat_topology(n: int = 3, port: int = 80) -> NatTopology:
    """Build the NAT seed topology with ``n`` real servers rs1..rsN (backends started)."""
    prefix = "hd-nat-"
    cleanup(prefix)
    cl, br = f"{prefix}cl", f"{prefix}br"
    backends = [
        Backend(
            name=f"rs{i}",
            netns=f"{prefix}rs{i}",
            addr=f"192.168.1.{100 + i}",
            addr6=f"fd00:0:0:2::{100 + i}",
            port=port,
        )
        for i in range(1, n + 1)
    ]
    topo = NatTopology(
        prefix=prefix,
        vip="10.0.0.1",
        client_ns=cl,
        client_addr="10.0.0.2",
        backends=backends,
        port=port,
        namespaces=[cl, *(b.netns for b in backends)],
        links=[br, cl, *(b.netns for b in backends)],
    )
    try:
        set_sysctls(None, {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
        batch = IpBatch()
        for ns in topo.namespaces:
            batch.netns_add(ns)
        batch.bridge(br)
        batch.addr(br, f"{topo.director_rs_addr}/24").addr(br, f"{topo.director_rs_addr6}/64")
        # Client leg: the root-side veth is named like the namespace.
        batch.veth(cl, "eth0", peer_netns=cl)
        batch.addr(cl, f"{topo.director_client_addr}/24").addr(cl, f"{topo.vip}/32")
        batch.addr(cl, f"{topo.director_client_addr6}/64").addr(cl, f"{topo.vip6}/128")
        batch.addr("eth0", f"{topo.client_addr}/24", cl).addr("eth0", f"{topo.client_addr6}/64", cl)
        batch.route("default", topo.director_client_addr, cl)
        batch.route("default", topo.director_client_addr6, cl)
        for b in backends:
            batch.veth(b.netns, "eth0", peer_netns=b.netns, master=br)
            batch.addr("eth0", f"{b.addr}/24", b.netns).addr("eth0", f"{b.addr6}/64", b.netns)
            # NAT: replies must go back through the director.
            batch.route("default", topo.director_rs_addr, b.netns)
            batch.route("default", topo.director_rs_addr6, b.netns)
        batch.run()
        start_backends(backends)
    except BaseException:
        topo.teardown()
        raise
    return topo


def dr_topology(n: int = 2, port: int = 80) -> DrTopology:
    """Build the DR topology with ``n`` real servers drs1..drsN (backends started)."""
    prefix = "hd-dr-"
    cleanup(prefix)
    cl, br = f"{prefix}cl", f"{prefix}br"
    backends = [
        Backend(name=f"drs{i}", netns=f"{prefix}rs{i}", addr=f"10.20.0.{10 + i}", port=port)
        for i in range(1, n + 1)
    ]
    topo = DrTopology(
        prefix=prefix,
        vip="10.20.0.100",
        client_ns=cl,
        client_addr="10.20.0.2",
        backends=backends,
        port=port,
        namespaces=[cl, *(b.netns for b in backends)],
        links=[br, cl, *(b.netns for b in backends)],
    )
    try:
        root = IpBatch()
        for ns in topo.namespaces:
            root.netns_add(ns)
        root.bridge(br)
        root.addr(br, f"{topo.director_addr}/24").addr(br, f"{topo.vip}/32")
        for ns in topo.namespaces:
            root.veth(ns, "eth0", peer_netns=ns, master=br)
        # Namespaces and their eth0 first: the ARP sysctls must be set before the VIP.
        run_parallel_batches({None: root.lines.get(None, [])})
        arp = {"arp_ignore": 1, "arp_announce": 2}
        for b in backends:
            set_sysctls(
                b.netns,
                {f"net.ipv4.conf.{dev}.{k}": v for dev in ("all", "eth0") for k, v in arp.items()},
            )
        ns_batch = IpBatch()
        ns_batch.lines = {ns: lines for ns, lines in root.lines.items() if ns is not None}
        ns_batch.addr("eth0", f"{topo.client_addr}/24", cl)
        for b in backends:
            ns_batch.addr("eth0", f"{b.addr}/24", b.netns)
            # The VIP on lo: accept packets for it, never answer ARP for it.
            ns_batch.addr("lo", f"{topo.vip}/32", b.netns)
        ns_batch.run()
        start_backends(backends)
    except BaseException:
        topo.teardown()
        raise
    return topo
