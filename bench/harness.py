"""The processes `bench token` measures: the whole mesh as `make run` starts it, and the reference.

The mesh is `devrun.mesh.start_mesh` (store, LiveKit server, agent_svc, chat_svc, Envoy; INFO logs,
Envoy's access log on, outside dev mode), so GenerateToken makes the ownership check on chat_svc
as it does for a user. The reference is bench/reference/server.js (Express, livekit-server-sdk,
one MongoDB findOne), on the same store with its own database.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devrun.launch import ROOT, child_env
from devrun.mesh import Mesh, start_mesh
from devrun.ports import free_port
from devrun.processes import ManagedProcess
from devrun.store import EmbeddedStore

# A fixed secret: the benchmark mints its own user tokens with it.
BENCH_JWT_SECRET = "bench-only-jwt-secret-0123456789abcdef-0123456789"  # noqa: S105 - loopback benchmark
# Services sign with their own secret, never with the users' one.
BENCH_SERVICE_SECRET = "bench-only-service-jwt-secret-0123456789abcdef"  # noqa: S105 - loopback benchmark
REFERENCE_DIR = ROOT / "bench" / "reference"
MESH_DATABASE = "bench"
REFERENCE_DATABASE = "bench_reference"
_READY_SECONDS = 30.0


@dataclass
class TokenStack:
    """The running mesh, the reference and the store they share.

    Attributes:
        mesh: The mesh (Envoy's URL is where the user's requests go).
        store_uri: The store both use.
        reference_url: The reference's base URL.
        processes: Name → pid of every process that serves a request, for CPU accounting.
    """

    mesh: Mesh
    store_uri: str
    reference_url: str
    processes: dict[str, int] = field(default_factory=dict)


def node_missing() -> str | None:
    """Why the reference and the load generator cannot run, or None when they can."""
    if shutil.which("node") is None:
        return "node is not on PATH (install Node.js 20+)"
    if not (REFERENCE_DIR / "node_modules" / "autocannon").is_dir():
        return "bench/reference has no node_modules: run `scripts/bootstrap.sh dev` (or npm ci there)"
    return None


@contextlib.contextmanager
def running_store(workdir: Path) -> Iterator[EmbeddedStore]:
    store = EmbeddedStore(workdir / "store", workdir / "logs" / "store.log")
    store.start()
    try:
        yield store
    finally:
        store.stop()


@contextlib.contextmanager
def token_stack(
    store: EmbeddedStore, workdir: Path, agent_env: Mapping[str, str] | None = None
) -> Iterator[TokenStack]:
    """Starts the mesh (as `make run` does, INFO logs) and the reference on `store`; stops both after."""
    mesh = start_mesh(
        store,
        workdir / "mesh",
        jwt_secret=BENCH_JWT_SECRET,
        service_jwt_secret=BENCH_SERVICE_SECRET,
        database=MESH_DATABASE,
        with_chat=True,
        with_envoy=True,
        log_level="INFO",
        extra_env=agent_env,
    )
    reference: ManagedProcess | None = None
    try:
        port = free_port()
        reference = ManagedProcess(
            "reference",
            ["node", str(REFERENCE_DIR / "server.js")],
            workdir / "logs" / "reference.log",
            env=child_env(
                {
                    "REFERENCE_PORT": str(port),
                    "REFERENCE_JWT_SECRET": BENCH_JWT_SECRET,
                    "REFERENCE_DATABASE": REFERENCE_DATABASE,
                    "MONGODB_URI": store.uri,
                    "LIVEKIT_URL": mesh.livekit.ws_url,
                    "LIVEKIT_API_KEY": mesh.livekit.api_key,
                    "LIVEKIT_API_SECRET": mesh.livekit.api_secret,
                    "NODE_ENV": "production",
                }
            ),
            cwd=REFERENCE_DIR,
        ).start()
        reference.wait_for_port("127.0.0.1", port, timeout=_READY_SECONDS)
        processes = {
            "envoy": mesh.process("envoy").pid,
            "agent_svc": mesh.process("agent_svc").pid,
            "chat_svc": mesh.process("chat_svc").pid,
            "store": store.process.pid if store.process is not None else 0,
            "reference": reference.pid,
        }
        yield TokenStack(mesh, store.uri, f"http://127.0.0.1:{port}", processes)
    finally:
        if reference is not None:
            reference.stop()
        mesh.close()


def load_generator_version() -> str:
    """autocannon's version, as installed in bench/reference."""
    try:
        meta = json.loads((REFERENCE_DIR / "node_modules" / "autocannon" / "package.json").read_text())
        return f"autocannon {meta['version']}"
    except (OSError, ValueError, KeyError):
        return "autocannon"


def cpu_count() -> int:
    return os.cpu_count() or 1
