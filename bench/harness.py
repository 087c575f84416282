"""The processes a benchmark measures: the embedded store, agent_svc and Envoy on loopback ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devrun.envoy_config import EdgeConfig
from devrun.launch import child_env, start_envoy, start_grpc_service
from devrun.mesh import MESH_EDGE_LIMITS
from devrun.ports import free_port
from devrun.processes import ManagedProcess
from devrun.store import start_store

# A fixed secret: the benchmark mints its own user tokens with it.
BENCH_JWT_SECRET = "bench-only-jwt-secret-0123456789abcdef-0123456789"  # noqa: S105 - loopback benchmark


@dataclass(frozen=True)
class BenchMesh:
    """Addresses of the running processes."""

    agent_addr: str
    envoy_url: str
    envoy_addr: str
    jwt_secret: str


@contextlib.contextmanager
def running_mesh(workdir: Path) -> Iterator[BenchMesh]:
    """Starts store, agent_svc (dev mode: LiveKit dev defaults, no chat_svc) and Envoy; stops them after.

    Without chat_svc, agent_svc in dev mode skips the ownership check, so GenerateToken measures
    token minting and the path to it, not a second service hop.
    """
    procs: list[ManagedProcess] = []
    try:
        store_port = free_port()
        procs.append(start_store(workdir / "store", store_port, workdir / "logs" / "store.log"))
        agent_addr = f"127.0.0.1:{free_port()}"
        env = child_env(
            {
                "SYNTERA_DEV_MODE": "true",
                "SYNTERA_JWT_SECRET": BENCH_JWT_SECRET,
                "MONGODB_URI": f"mongodb://127.0.0.1:{store_port}",
                "MONGODB_DATABASE": "bench",
                "AGENT_SVC_HOST": "127.0.0.1",
                "AGENT_SVC_PORT": agent_addr.rsplit(":", 1)[1],
                "CHAT_SVC_ADDRESS": "",
                "LIVEKIT_URL": "",
                "LIVEKIT_API_KEY": "",
                "LIVEKIT_API_SECRET": "",
                # Access logs per call would measure the terminal, not the service.
                "LOG_LEVEL": "WARNING",
            }
        )
        procs.append(
            start_grpc_service(
                "agent_svc", "agent_svc", agent_addr, env, workdir / "logs" / "agent_svc.log", cwd=workdir
            )
        )
        edge = EdgeConfig(
            listen_port=free_port(),
            admin_port=free_port(),
            agent_address=agent_addr,
            chat_address=None,
            access_log=False,
            # The load generator is one address making thousands of calls a second.
            limits=MESH_EDGE_LIMITS,
        )
        procs.append(start_envoy(edge, workdir / "envoy.json", workdir / "logs" / "envoy.log"))
        yield BenchMesh(
            agent_addr=agent_addr,
            envoy_url=f"http://127.0.0.1:{edge.listen_port}",
            envoy_addr=f"127.0.0.1:{edge.listen_port}",
            jwt_secret=BENCH_JWT_SECRET,
        )
    finally:
        for proc in reversed(procs):
            proc.stop()
