"""Mesh fixtures for `mesh` tests: the real processes of `devrun.mesh`, with the tests' JWT secret.

Usage — tests/conftest.py re-exports the fixtures `mesh` and `mesh_factory` for every folder (do not
import them again in a folder's conftest: that would define a second session-wide mesh). Either
take the shared, session-wide `mesh` (read-mostly tests; isolate by ids) or build your own with
`mesh_factory(...)` when a test kills, restarts or reconfigures processes::

    async def test_x(mesh: Mesh) -> None:
        async with httpx.AsyncClient(base_url=mesh.envoy_url) as http: ...
        channel = grpc.aio.insecure_channel(mesh.agent_addr)  # or mesh.chat_addr, or mesh.envoy_addr

    def test_fault(mesh_factory: MeshFactory) -> None:
        mesh = mesh_factory(database="fault")
        mesh.kill("chat_svc"); mesh.start("chat_svc")   # same port, same store

Meshes run the real LiveKit server (built by bootstrap into `.tools/bin`). `standin=True` puts the
Twirp stand-in (`tests/support/livekit_standin.py`) in its place, only for the faults the real
server cannot produce; `with_worker=True` adds the voice worker with offline providers.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from devrun.launch import ROOT, child_env
from devrun.livekit_server import LiveKitKeys
from devrun.mesh import (
    AGENT_SVC,
    CHAT_SVC,
    ENVOY,
    LIVEKIT,
    START_TIMEOUT_SECONDS,
    VOICE_WORKER,
    LiveKitEndpoint,
    Mesh,
    StoreLike,
    start_mesh,
)
from devrun.ports import port_open
from devrun.processes import ManagedProcess
from tests.support.identity import JWT_SECRET, SERVICE_JWT_SECRET

__all__ = [
    "AGENT_SVC",
    "CHAT_SVC",
    "ENVOY",
    "LIVEKIT",
    "VOICE_WORKER",
    "LiveKitEndpoint",
    "Mesh",
    "MeshFactory",
    "StandIn",
    "StoreLike",
    "mesh",
    "mesh_factory",
    "start_test_mesh",
]


@dataclass(frozen=True)
class StandIn:
    """Launches the LiveKit Twirp stand-in as a process in the real server's place."""

    keys: LiveKitKeys = LiveKitKeys("mesh-test-key", "mesh-test-livekit-secret-0123456789abcdef")

    def launch(self, endpoint: LiveKitEndpoint, log_dir: Path, cwd: Path) -> ManagedProcess:
        args = [
            sys.executable,
            "-m",
            "tests.support.livekit_standin",
            "--port",
            str(endpoint.port),
            "--api-key",
            endpoint.api_key,
            "--api-secret",
            endpoint.api_secret,
        ]
        env = child_env({"PYTHONPATH": str(ROOT)})
        proc = ManagedProcess(LIVEKIT, args, log_dir / "livekit.log", env=env, cwd=cwd).start()
        try:
            proc.wait_until(lambda: port_open("127.0.0.1", endpoint.port), START_TIMEOUT_SECONDS, "listening")
        except BaseException:
            proc.stop()
            raise
        return proc


class MeshFactory(Protocol):
    """The `mesh_factory` fixture: `start_test_mesh` with the store and a folder filled in."""

    def __call__(
        self,
        *,
        database: str | None = None,
        with_chat: bool = True,
        with_envoy: bool = True,
        with_worker: bool = False,
        standin: bool = False,
        cors_allowed_origins: tuple[str, ...] = ("http://allowed.example",),
        extra_env: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
    ) -> Mesh: ...


def start_test_mesh(
    store: StoreLike,
    workdir: Path,
    *,
    database: str | None = None,
    with_chat: bool = True,
    with_envoy: bool = True,
    with_worker: bool = False,
    standin: bool = False,
    cors_allowed_origins: tuple[str, ...] = ("http://allowed.example",),
    extra_env: Mapping[str, str] | None = None,
    webhook_url: str | None = None,
) -> Mesh:
    """`devrun.mesh.start_mesh` with the tests' JWT secret; `standin` swaps in the Twirp stand-in.

    The real LiveKit server sends its webhooks to Envoy unless `webhook_url` says otherwise.
    """
    return start_mesh(
        store,
        workdir,
        jwt_secret=JWT_SECRET,
        service_jwt_secret=SERVICE_JWT_SECRET,
        database=database,
        with_chat=with_chat,
        with_envoy=with_envoy,
        with_worker=with_worker,
        livekit=StandIn() if standin else None,
        cors_allowed_origins=cors_allowed_origins,
        extra_env=extra_env,
        webhook_url=webhook_url,
    )


@pytest.fixture(scope="session")
def mesh(store: StoreLike, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One mesh for the whole session, chat_svc included. Do not stop its processes."""
    running = start_test_mesh(store, tmp_path_factory.mktemp("mesh"))
    yield running
    running.close()


@pytest.fixture
def mesh_factory(store: StoreLike, tmp_path: Path) -> Iterator[MeshFactory]:
    """Builds private meshes (same arguments as `start_test_mesh` after `store`); all closed at teardown."""
    built: list[Mesh] = []

    def factory(
        *,
        database: str | None = None,
        with_chat: bool = True,
        with_envoy: bool = True,
        with_worker: bool = False,
        standin: bool = False,
        cors_allowed_origins: tuple[str, ...] = ("http://allowed.example",),
        extra_env: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
    ) -> Mesh:
        running = start_test_mesh(
            store,
            tmp_path / f"mesh{len(built)}",
            database=database,
            with_chat=with_chat,
            with_envoy=with_envoy,
            with_worker=with_worker,
            standin=standin,
            cors_allowed_origins=cors_allowed_origins,
            extra_env=extra_env,
            webhook_url=webhook_url,
        )
        built.append(running)
        return running

    yield factory
    for running in reversed(built):
        running.close()
