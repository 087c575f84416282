"""The test mesh restarts a process on its own port, even with other test runs on the machine.

A stopped process's port used to come from the kernel's ephemeral range, where any outgoing
connection made while the process was down could take it ("Address already in use" on restart).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from devrun.mesh import _port_taken
from devrun.ports import RESTARTABLE_PORTS_FROM, bindable, restartable_port
from devrun.readiness import grpc_serving
from tests.support.mesh import CHAT_SVC, MeshFactory

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.unit
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_restartable_ports_are_free_and_outside_the_kernels_ephemeral_range(kind: socket.SocketKind) -> None:
    ephemeral_from = int(EPHEMERAL_RANGE.read_text().split()[0])
    ports = {restartable_port(kind=kind) for _ in range(20)}
    for port in ports:
        assert RESTARTABLE_PORTS_FROM <= port < ephemeral_from
        assert bindable("127.0.0.1", port, kind)


@pytest.mark.unit
@pytest.mark.parametrize(
    "log",
    [
        "OSError: could not bind 127.0.0.1:20001",
        "E0101 ... Failed to add :20001: Address already in use",
        "listen tcp 127.0.0.1:20001: bind: address already in use",
        "[Errno 98] error while attempting to bind on address ('127.0.0.1', 20001)",
    ],
)
def test_a_start_refused_for_a_taken_port_is_recognised(log: str) -> None:
    assert _port_taken(f"chat_svc exited before SERVING:\n{log}")
    assert not _port_taken("chat_svc exited before SERVING:\nMONGODB_URI is not set")


@pytest.mark.mesh
@pytest.mark.timeout(180)
def test_a_restart_waits_out_a_port_held_for_a_moment(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory(with_envoy=False)
    assert mesh.chat_addr is not None
    host, port = mesh.chat_addr.rsplit(":", 1)
    log = mesh.log_dir / f"{CHAT_SVC}.log"
    mesh.kill(CHAT_SVC)
    refusals_before = _refusals(log)
    # Someone else binds the port while chat_svc is down, and lets go of it once chat_svc's first
    # start has failed on it (a timer would race with how long the start takes on a busy machine).
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As servers bind: agent_svc was connected to chat_svc, so the killed chat_svc's side of that
    # connection sits in TIME_WAIT on the port, and only a socket with SO_REUSEADDR may bind it.
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind((host, int(port)))
    holder.listen()
    done = threading.Event()

    def release() -> None:
        deadline = time.monotonic() + 60
        while not done.is_set() and _refusals(log) == refusals_before and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.close()

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        mesh.start(CHAT_SVC)
    finally:
        done.set()
        releaser.join()
    assert _refusals(log) > refusals_before, "the first start did not meet the taken port"
    assert grpc_serving(mesh.chat_addr)


def _refusals(log: Path) -> int:
    text = log.read_text(errors="replace").lower() if log.exists() else ""
    return text.count("address already in use")
