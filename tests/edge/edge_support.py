"""A second, real Envoy in front of a mesh's services, with limits a test chooses.

The shared mesh's Envoy runs with a request rate no person reaches (tests drive it from one address);
tests of the rate limit, the timeouts and the connection limit start their own with `own_edge`, on
fresh ports, against the same agent_svc and chat_svc.
"""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devrun.edge_limits import EdgeLimits
from devrun.envoy_config import EdgeConfig
from devrun.launch import start_envoy
from devrun.ports import free_port
from devrun.processes import ManagedProcess
from tests.support.mesh import Mesh


@dataclass(frozen=True)
class OwnEdge:
    """A running Envoy: its listener (`host`, `port`, `url`), admin port and process."""

    port: int
    admin_port: int
    process: ManagedProcess
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rss_bytes(self) -> int:
        """Envoy's resident memory now (what the machine pays, heap and everything else)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as reply:  # noqa: S310 - loopback admin
            text: str = reply.read().decode()
            return text


@contextlib.contextmanager
def own_edge(mesh: Mesh, workdir: Path, limits: EdgeLimits) -> Iterator[OwnEdge]:
    """Starts an Envoy with `limits` in front of `mesh`'s services; stops it afterwards."""
    config = EdgeConfig(
        listen_port=free_port(),
        admin_port=free_port(),
        agent_address=mesh.agent_addr,
        chat_address=mesh.chat_addr,
        cors_allowed_origins=("http://allowed.example",),
        access_log=False,
        limits=limits,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    process = start_envoy(config, workdir / "envoy.json", workdir / "envoy.log")
    try:
        yield OwnEdge(config.listen_port, config.admin_port, process)
    finally:
        process.stop()
