"""Free-port lookup for processes that cannot bind port 0 and report it back."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Ports handed out by `restartable_port`: below the kernel's ephemeral range (Linux: 32768-60999).
RESTARTABLE_PORTS_FROM = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_TRIES = 200


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago. Racy by nature; callers retry on bind failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def restartable_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A free port for a process that will be stopped and started again on it (the test meshes).

    `free_port` takes its ports from the kernel's ephemeral range, the one every outgoing connection
    on the machine takes its local port from: while a process is down, any connection made meanwhile
    (other test runs share the machine) can take its port, and the restart fails with "Address
    already in use". Ports below that range are never handed out by the kernel, only bound on
    purpose; this picks a free one at random there. Where the range is unknown or leaves no room
    below it, it falls back to `free_port`.
    """
    ephemeral_from = _ephemeral_range_start()
    if ephemeral_from is None or ephemeral_from - RESTARTABLE_PORTS_FROM < 1000:
        return free_port(host) if kind == socket.SOCK_STREAM else _free_kernel_port(host, kind)
    for _ in range(_TRIES):
        port = random.randrange(RESTARTABLE_PORTS_FROM, ephemeral_from)  # noqa: S311 - not security
        if bindable(host, port, kind):
            return port
    return free_port(host) if kind == socket.SOCK_STREAM else _free_kernel_port(host, kind)


def bindable(host: str, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    """True when nothing else holds `host:port` (no SO_REUSEADDR: a socket in TIME_WAIT counts)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_kernel_port(host: str, kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _ephemeral_range_start() -> int | None:
    try:
        low, _high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return None
    return low


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
