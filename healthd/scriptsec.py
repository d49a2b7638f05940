"""Script security: refuse a script that a user other than root could change.

In the spirit of keepalived's ``enable_script_security``: healthd runs script checks and notify
commands on a schedule, so whoever can change such a file (or rename it away, or swap a directory
on its path) could run code as the scripts user, or as root when ``scripts.user`` is root.  A
program is secure when the file, every directory on the way to it, and every symlink met on the
way (each hop of each link, not just the final target) are owned by root and not writable by
others, nor by their group unless that group is root.  ``scripts.insecure: true`` disables the
check.  File ACLs are not inspected.

A program that does not exist yet is not reported here (the probe says "cannot run"): if every
directory that does exist on its path is secure, only root can create it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat

from healthd import procs
from healthd.checkspec import ScriptCheck
from healthd.config.types import Config, NotifyConfig

_MAX_LINKS = 40  # like the kernel's limit on symlinks followed in one lookup


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _problem(path: str, st: os.stat_result) -> str | None:
    """Why this one path element is insecure, or None."""
    if stat.S_ISLNK(st.st_mode):
        kind = "symlink"  # its own mode means nothing: only who owns it (and its directory)
    elif stat.S_ISDIR(st.st_mode):
        kind = "directory"
    else:
        kind = "file"
    if st.st_uid != 0:
        return f"{kind} {path} is owned by {_user(st.st_uid)}, not root"
    if kind == "symlink":
        return None
    mode = f"mode {stat.S_IMODE(st.st_mode):04o}"
    if st.st_mode & stat.S_IWOTH:
        return f"{kind} {path} is writable by others ({mode})"
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        return f"{kind} {path} is writable by group {_group(st.st_gid)} ({mode})"
    return None


def _walk(path: str, links: int) -> str | None:
    """Check ``path`` element by element from ``/``, following symlinks hop by hop."""
    current = "/"
    problem = _problem(current, os.lstat(current))
    if problem:
        return problem
    parts = [part for part in path.split("/") if part not in ("", ".")]
    for index, name in enumerate(parts):
        if name == "..":
            current = os.path.dirname(current)  # ``current`` is never a symlink here
            continue
        element = os.path.join(current, name)
        try:
            st = os.lstat(element)
        except (FileNotFoundError, NotADirectoryError):
            return None  # nothing more exists: only root could create it (see above)
        except OSError as exc:
            return f"cannot inspect {element}: {exc.strerror or exc}"
        problem = _problem(element, st)
        if problem:
            return problem
        if stat.S_ISLNK(st.st_mode):
            if links >= _MAX_LINKS:
                return f"{path}: too many levels of symbolic links"
            rest = "/".join(parts[index + 1 :])
            target = os.path.join(current, os.readlink(element), rest)  # absolute target wins
            return _walk(target, links + 1)
        current = element
    return None


def insecure_reason(path: str) -> str | None:
    """Why the program ``path`` is insecure (one phrase), or None when only root can change it.

    A bare name is looked up on the scripts' PATH, as the child's exec will.
    """
    if "/" not in path:
        found = shutil.which(path, path=procs.PATH)
        if found is None:
            return None
        path = found
    return _walk(os.path.abspath(path), 0)


def _programs(config: Config) -> dict[str, list[str]]:
    """Every program healthd would run -> where it is used ("web/web-1 check script", ...)."""
    used: dict[str, list[str]] = {}

    def notify(where: str, notify: NotifyConfig | None) -> None:
        if notify is not None:
            for event, argv in (("up", notify.up), ("down", notify.down)):
                if argv:
                    used.setdefault(argv[0], []).append(f"{where} {event}")

    for vs in config.virtual_servers:
        notify(f"virtual server {vs.name} notify_pool", vs.notify_pool)
        for rs in vs.real_servers:
            for check in rs.checks:
                if isinstance(check.spec, ScriptCheck):
                    where = f"{vs.name}/{rs.name} check {check.name}"
                    used.setdefault(check.spec.command[0], []).append(where)
            notify(f"{vs.name}/{rs.name} notify", rs.notify)
    return used


def check_config_scripts(config: Config) -> list[str]:
    """One line per problem that must stop healthd from running the config's programs.

    Each insecure program (script check or notify command) gets one line naming where it is
    used, its path and why (unless ``scripts.insecure``).  A ``scripts.user`` that does not
    exist is reported too, when there is any program to run as it.
    """
    used = _programs(config)
    lines: list[str] = []
    if used and config.scripts.user is not None:
        try:
            procs.credentials(config.scripts.user)
        except procs.UnknownUser:
            lines.append(
                f"scripts.user {config.scripts.user!r} does not exist:"
                " script checks and notify commands run as that user"
            )
    if config.scripts.insecure:
        return lines
    for path, where in used.items():
        reason = insecure_reason(path)
        if reason is not None:
            more = f" and {len(where) - 1} more" if len(where) > 1 else ""
            lines.append(f"insecure script {path} (used by {where[0]}{more}): {reason}")
    return lines
