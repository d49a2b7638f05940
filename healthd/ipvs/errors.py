"""Errors from the IPVS adapters, mapped from errno at the boundary.

IpvsError
├── IpvsUnavailable   no IPVS in this kernel, or no permission to use it
├── IpvsExists        EEXIST: add of something that is there
├── IpvsNotFound      ENOENT/ESRCH: edit or delete of something that is not there
├── IpvsInvalid       EINVAL and friends: the kernel refuses the request
└── IpvsTransient     ENOBUFS, timeouts, a broken socket: retry on a fresh socket
"""

from __future__ import annotations

import errno

UNAVAILABLE = (
    "IPVS is not available in this kernel (the ip_vs module is not loaded and could not be "
    "loaded): load it with 'modprobe ip_vs', or run with --dry-run"
)
NEEDS_ROOT = "IPVS needs root (CAP_NET_ADMIN): run healthd as root, or with --dry-run"


class IpvsError(Exception):
    """A kernel IPVS request failed."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class IpvsUnavailable(IpvsError):
    pass


class IpvsExists(IpvsError):
    pass


class IpvsNotFound(IpvsError):
    pass


class IpvsInvalid(IpvsError):
    pass


class IpvsTransient(IpvsError):
    pass


def from_errno(code: int, what: str) -> IpvsError:
    """The most specific error for a negative or positive errno from the kernel."""
    code = abs(code)
    text = f"{what}: {errno.errorcode.get(code, str(code))} ({_strerror(code)})"
    if code == errno.EEXIST:
        return IpvsExists(text, code)
    if code in (errno.ENOENT, errno.ESRCH):
        return IpvsNotFound(text, code)
    if code in (errno.EPERM, errno.EACCES):
        return IpvsUnavailable(text, code)
    if code in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT):
        return IpvsTransient(text, code)
    return IpvsInvalid(text, code)


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)
