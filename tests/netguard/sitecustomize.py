"""Loaded by every Python process started with this folder on PYTHONPATH: any attempt to reach a
non-loopback address fails loudly, so a test can show a command needs no network."""

from __future__ import annotations

import ipaddress
import socket

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


class NetworkBlockedError(OSError):
    """Raised instead of any outbound connection."""


def _is_local(host: object) -> bool:
    if isinstance(host, str) and host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


def _connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) else address
        if not _is_local(host):
            raise NetworkBlockedError(f"network access blocked by test: connect to {address!r}")
    _real_connect(self, address)  # type: ignore[arg-type]


def _getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
    if host is not None and not _is_local(host):
        raise NetworkBlockedError(f"network access blocked by test: resolve {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]


socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
socket.getaddrinfo = _getaddrinfo  # type: ignore[assignment]
