"""Script security: real files, owners and modes (we are root), and ``healthd run`` refusing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthd import cli
from healthd.config import parse_text
from healthd.scriptsec import check_config_scripts, insecure_reason

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
NOBODY = 65534
NOGROUP = 65534


@pytest.fixture
def secure_dir() -> Iterator[Path]:
    """A root-owned 0755 directory whose ancestors are all root-owned and not world-writable.

    ``tmp_path`` cannot be one: it lies under /tmp, which is world-writable (mode 1777), so every
    script in it is rightly insecure.  /run is root's 0755 tmpfs.
    """
    path = Path(tempfile.mkdtemp(prefix="healthd-scriptsec-", dir="/run"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def script(path: Path, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def directory(path: Path, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
    path.mkdir()
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def test_root_owned_script_in_root_owned_directories_is_secure(secure_dir: Path) -> None:
    assert insecure_reason(str(script(secure_dir / "check.sh"))) is None
    assert insecure_reason("/bin/true") is None
    assert insecure_reason("sh") is None  # a bare name: looked up on the scripts' PATH


def test_script_writable_by_others(secure_dir: Path) -> None:
    path = script(secure_dir / "check.sh", mode=0o757)
    assert insecure_reason(str(path)) == f"file {path} is writable by others (mode 0757)"


def test_script_owned_by_another_user(secure_dir: Path) -> None:
    path = script(secure_dir / "check.sh", uid=NOBODY)
    assert insecure_reason(str(path)) == f"file {path} is owned by nobody (uid 65534), not root"


def test_group_writable_is_fine_only_for_the_root_group(secure_dir: Path) -> None:
    root_group = directory(secure_dir / "root-group", mode=0o775)
    assert insecure_reason(str(script(root_group / "check.sh", mode=0o775))) is None
    other = directory(secure_dir / "nogroup", mode=0o775, gid=NOGROUP)
    path = script(other / "check.sh")
    assert insecure_reason(str(path)) == (
        f"directory {other} is writable by group nogroup (gid 65534) (mode 0775)"
    )


def test_a_script_under_tmp_is_insecure(tmp_path: Path) -> None:
    path = script(tmp_path / "check.sh")
    assert insecure_reason(str(path)) == "directory /tmp is writable by others (mode 1777)"


def test_symlink_to_a_script_in_an_unsafe_directory(secure_dir: Path) -> None:
    unsafe = directory(secure_dir / "unsafe", mode=0o777)
    target = script(unsafe / "real.sh")
    link = secure_dir / "check.sh"
    link.symlink_to(target)
    assert insecure_reason(str(link)) == f"directory {unsafe} is writable by others (mode 0777)"
    safe_link = secure_dir / "ok.sh"
    safe_link.symlink_to(script(secure_dir / "real.sh"))
    assert insecure_reason(str(safe_link)) is None


def test_every_hop_of_a_symlink_chain_is_checked(secure_dir: Path) -> None:
    """secure/check.sh -> unsafe/hop -> ../real.sh: the target is safe, the middle hop is not."""
    final = script(secure_dir / "real.sh")
    unsafe = directory(secure_dir / "unsafe", mode=0o777)
    (unsafe / "hop").symlink_to("../real.sh")
    (secure_dir / "check.sh").symlink_to(unsafe / "hop")
    assert insecure_reason(str(final)) is None
    assert insecure_reason(str(secure_dir / "check.sh")) == (
        f"directory {unsafe} is writable by others (mode 0777)"
    )


def test_symlinked_directory_on_the_way(secure_dir: Path) -> None:
    elsewhere = directory(secure_dir / "elsewhere", uid=NOBODY)
    script(elsewhere / "check.sh")
    (secure_dir / "checks").symlink_to("elsewhere")
    assert insecure_reason(str(secure_dir / "checks" / "check.sh")) == (
        f"directory {elsewhere} is owned by nobody (uid 65534), not root"
    )


def test_symlink_owned_by_another_user(secure_dir: Path) -> None:
    link = secure_dir / "check.sh"
    link.symlink_to(script(secure_dir / "real.sh"))
    os.lchown(link, NOBODY, NOGROUP)
    assert insecure_reason(str(link)) == (
        f"symlink {link} is owned by nobody (uid 65534), not root"
    )


def test_symlink_loop_is_reported(secure_dir: Path) -> None:
    (secure_dir / "a").symlink_to("b")
    (secure_dir / "b").symlink_to("a")
    reason = insecure_reason(str(secure_dir / "a"))
    assert reason is not None and "too many levels of symbolic links" in reason


def test_missing_script_in_a_safe_directory_is_left_to_the_probe(secure_dir: Path) -> None:
    assert insecure_reason(str(secure_dir / "not-yet" / "check.sh")) is None
    unsafe = directory(secure_dir / "unsafe", mode=0o777)
    assert insecure_reason(str(unsafe / "check.sh")) is not None  # anyone could create it


# ---- the whole config ------------------------------------------------------------------------


def config_text(secure: Path, unsafe: Path, scripts: str = "") -> str:
    return f"""{scripts}
virtual_servers:
  - name: web
    address: 10.0.0.1
    port: 80
    checks: [{{type: script, name: app, command: [{unsafe}/check.sh, --quick]}}]
    notify: {{down: [{unsafe}/page.sh]}}
    notify_pool: {{down: [{unsafe}/pool.sh], up: [{secure}/pool-up.sh]}}
    real_servers:
      - {{name: web-1, address: 192.168.1.101}}
      - {{name: web-2, address: 192.168.1.102}}
      - name: web-3
        address: 192.168.1.103
        checks: [{{type: script, command: [{secure}/check.sh]}}]
"""


@pytest.fixture
def dirs(secure_dir: Path) -> tuple[Path, Path]:
    unsafe = directory(secure_dir / "unsafe", mode=0o777)
    for name in ("check.sh", "page.sh", "pool.sh"):
        script(unsafe / name)
    for name in ("check.sh", "pool-up.sh"):
        script(secure_dir / name)
    return secure_dir, unsafe


def test_config_lines_name_each_insecure_program_and_its_users(dirs: tuple[Path, Path]) -> None:
    secure, unsafe = dirs
    config = parse_text(config_text(secure, unsafe), "healthd.yaml")
    why = f"directory {unsafe} is writable by others (mode 0777)"
    assert check_config_scripts(config) == [
        f"insecure script {unsafe}/pool.sh (used by virtual server web notify_pool down): {why}",
        f"insecure script {unsafe}/check.sh (used by web/web-1 check app and 1 more): {why}",
        f"insecure script {unsafe}/page.sh (used by web/web-1 notify down and 2 more): {why}",
    ]


def test_scripts_insecure_allows_them(dirs: tuple[Path, Path]) -> None:
    secure, unsafe = dirs
    config = parse_text(config_text(secure, unsafe, "scripts: {insecure: true}"), "healthd.yaml")
    assert check_config_scripts(config) == []


def test_unknown_scripts_user_is_reported(dirs: tuple[Path, Path]) -> None:
    secure, unsafe = dirs
    text = config_text(secure, unsafe, "scripts: {insecure: true, user: no-such-user-healthd}")
    assert check_config_scripts(parse_text(text, "healthd.yaml")) == [
        "scripts.user 'no-such-user-healthd' does not exist:"
        " script checks and notify commands run as that user"
    ]


def test_run_refuses_to_start(
    dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secure, unsafe = dirs
    path = tmp_path / "healthd.yaml"
    path.write_text(config_text(secure, unsafe) + "metrics: {enabled: false}\n")
    assert cli.main(["run", "-c", str(path), "--dry-run"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"insecure script {unsafe}/pool.sh (used by virtual server web")
    assert len(err) == 4
    assert err[-1].startswith(f"healthd: refusing to start: the programs {path} runs")
