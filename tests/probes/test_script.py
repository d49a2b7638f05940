"""Script probe: exit codes, environment, output capping, and no process left behind."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from healthd.checkspec import Reason, ScriptCheck, Target
from healthd.probes import run_probe, timeout_result
from healthd.probes.script import script_env

TARGET = Target("127.0.0.1", 8080, "192.0.2.10", 80, "tcp", 0)
SH = "/bin/sh"


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for someone else's reaping)."""
    state = proc_state(pid)
    return state is not None and state[0] not in ("Z", "X")


def my_children() -> set[int]:
    children: set[int] = set()
    for path in glob.glob("/proc/self/task/*/children"):
        with contextlib.suppress(FileNotFoundError):
            children.update(int(pid) for pid in Path(path).read_text().split())
    return children


@pytest.fixture(autouse=True)
def _no_children_left() -> Iterator[None]:
    """Every test: no child process of ours (running or zombie) survives the probe."""
    yield
    assert my_children() == set()


@pytest.fixture
def pid_files() -> Iterator[list[Path]]:
    """Files naming pids a test spawned: whatever still runs is SIGKILLed if the test failed."""
    files: list[Path] = []
    yield files
    for path in files:
        with contextlib.suppress(FileNotFoundError, ValueError):
            for pid in (int(word) for word in path.read_text().split()):
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


async def test_exit_zero_is_ok() -> None:
    result = await run_probe(ScriptCheck((SH, "-c", "echo all good")), TARGET)
    assert result.ok, result
    assert result.reason is Reason.OK
    assert result.detail == "script /bin/sh for 127.0.0.1:8080: exit 0: all good"


async def test_exit_two_reports_output() -> None:
    spec = ScriptCheck((SH, "-c", "echo line one; echo line two >&2; exit 2"))
    result = await run_probe(spec, TARGET)
    assert not result.ok
    assert result.reason is Reason.EXIT
    assert result.detail == "script /bin/sh for 127.0.0.1:8080: exit 2: line one | line two"


async def test_killed_by_signal() -> None:
    result = await run_probe(ScriptCheck((SH, "-c", "kill -9 $$")), TARGET)
    assert result.reason is Reason.SIGNAL
    assert "killed by signal 9 (SIGKILL)" in result.detail


async def test_environment_is_minimal_plus_target(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    target = Target("2001:db8::5", 443, "", 0, "", 7)
    result = await run_probe(ScriptCheck((sys.executable, "-c", code)), target)
    assert result.ok, result
    env = json.loads(out.read_text())
    assert env == script_env(target)
    assert env["HEALTHD_REAL_SERVER_ADDRESS"] == "2001:db8::5"
    assert env["HEALTHD_REAL_SERVER_PORT"] == "443"
    assert env["HEALTHD_VIRTUAL_SERVER_FWMARK"] == "7"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["LANG"] == "C.UTF-8"


def test_script_env_has_virtual_server() -> None:
    env = script_env(TARGET)
    assert env["HEALTHD_VIRTUAL_SERVER_ADDRESS"] == "192.0.2.10"
    assert env["HEALTHD_VIRTUAL_SERVER_PORT"] == "80"
    assert env["HEALTHD_VIRTUAL_SERVER_PROTOCOL"] == "tcp"
    assert env["HEALTHD_VIRTUAL_SERVER_FWMARK"] == "0"


async def test_huge_output_is_capped_and_does_not_block() -> None:
    code = "import sys; sys.stdout.write('y' * 10_000_000); sys.stdout.write('END')"
    spec = ScriptCheck((sys.executable, "-c", code), max_output_bytes=100)
    async with asyncio.timeout(10):
        result = await run_probe(spec, TARGET)
    assert result.ok, result.detail[:200]
    assert result.detail.endswith(": exit 0: " + "y" * 100 + " [truncated]")


async def test_background_child_holding_stdout_is_killed(
    tmp_path: Path, settle: Callable[..., Awaitable[bool]], pid_files: list[Path]
) -> None:
    pids = tmp_path / "pids"
    pid_files.append(pids)
    spec = ScriptCheck((SH, "-c", f"sleep 60 & echo $! > {pids}; echo started"))
    async with asyncio.timeout(5):
        result = await run_probe(spec, TARGET)
    assert result.ok, result
    assert result.detail.endswith("exit 0: started")
    child = int(pids.read_text())
    assert await settle(lambda: not alive(child)), proc_state(child)


async def test_escaped_process_does_not_hang_the_probe(
    tmp_path: Path, pid_files: list[Path]
) -> None:
    pid_file = tmp_path / "pid"
    pid_files.append(pid_file)
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "print('leader done')\n"
    )
    async with asyncio.timeout(5):
        result = await run_probe(ScriptCheck((sys.executable, "-c", code)), TARGET)
    assert result.ok, result
    assert "leader done" in result.detail
    assert result.duration_s < 2  # the drain grace, not the escaped process, bounds the wait
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize(
    "prelude",
    [
        pytest.param("", id="obeys-sigterm"),
        pytest.param("trap '' TERM;", id="ignores-sigterm"),
    ],
)
async def test_timeout_kills_the_whole_group(
    tmp_path: Path,
    prelude: str,
    settle: Callable[..., Awaitable[bool]],
    no_leftovers: Callable[[], Awaitable[None]],
    pid_files: list[Path],
) -> None:
    pids = tmp_path / "pids"
    pid_files.append(pids)
    script = f"{prelude} sleep 60 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; sleep 60"
    spec = ScriptCheck((SH, "-c", script))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await run_probe(spec, TARGET)
    leader, child = (int(pid) for pid in pids.read_text().split())
    assert proc_state(leader) is None  # killed and reaped: no zombie
    assert leader not in my_children()
    assert await settle(lambda: not alive(child)), proc_state(child)
    with contextlib.suppress(ProcessLookupError):  # only zombies (reaped by init) may remain
        os.killpg(leader, 0)
        assert all(not alive(pid) for pid in (leader, child))
    await no_leftovers()
    result = timeout_result(spec, TARGET, 0.5)
    assert result.detail == "script /bin/sh for 127.0.0.1:8080: timed out after 0.5s"


@pytest.mark.parametrize(
    ("command", "words"),
    [
        pytest.param(("/nonexistent/check-backend",), "no such file or directory", id="not-found"),
        pytest.param(("check-backend-not-on-path",), "no such file or directory", id="not-on-path"),
    ],
)
async def test_spawn_failure_is_an_error(command: tuple[str, ...], words: str) -> None:
    result = await run_probe(ScriptCheck(command), TARGET)
    assert result.reason is Reason.ERROR
    assert not result.ok
    assert result.detail == f"script {command[0]} for 127.0.0.1:8080: cannot run: {words}"


async def test_not_executable_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "check.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o644)
    result = await run_probe(ScriptCheck((str(path),)), TARGET)
    assert result.reason is Reason.ERROR
    assert result.detail.endswith("cannot run: permission denied")


# ---- scripts.user: checks run as an unprivileged user when healthd is root -------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_runs_as_the_scripts_user() -> None:
    spec = ScriptCheck(("/usr/bin/id", "-u"), user="nobody")
    result = await run_probe(spec, TARGET)
    assert result.ok, result
    assert result.detail == "script /usr/bin/id for 127.0.0.1:8080: exit 0: 65534"
    groups = await run_probe(ScriptCheck(("/usr/bin/id", "-G"), user="nobody"), TARGET)
    assert groups.detail.endswith(": exit 0: 65534")  # nogroup only: root's groups are dropped


async def test_without_a_user_runs_as_healthd() -> None:
    result = await run_probe(ScriptCheck(("/usr/bin/id", "-u")), TARGET)
    assert result.detail.endswith(f": exit 0: {os.geteuid()}")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_unknown_user_is_a_clear_error() -> None:
    spec = ScriptCheck(("/bin/true",), user="no-such-user-healthd")
    result = await run_probe(spec, TARGET)
    assert not result.ok
    assert result.reason is Reason.ERROR
    assert result.detail == (
        "script /bin/true for 127.0.0.1:8080: cannot run as user 'no-such-user-healthd':"
        " no such user"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.parametrize(
    ("scripts", "uid"),
    [
        pytest.param("", "65534", id="default-nobody"),
        pytest.param("scripts: {user: root}\n", "0", id="root-explicitly"),
    ],
)
async def test_config_scripts_user_reaches_the_probe(scripts: str, uid: str) -> None:
    from healthd.config import parse_text

    config = parse_text(
        scripts
        + """
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{type: script, command: [/usr/bin/id, -u]}]
    real_servers: [{name: web-1, address: 127.0.0.1}]
""",
        "test.yaml",
    )
    check = config.virtual_servers[0].real_servers[0].checks[0]
    result = await run_probe(check.spec, TARGET)
    assert result.detail.endswith(f": exit 0: {uid}")
