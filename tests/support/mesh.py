"""The real mesh for `mesh` tests: agent_svc, chat_svc, the LiveKit stand-in and Envoy as processes.

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

Every process listens on an ephemeral loopback port, logs to the test's temporary folder (the log
tail is in the error when a start fails), and is stopped (its whole process group) at teardown.
Processes run with the tests' JWT secret (`tests.support.identity`), outside dev mode, against the
session's embedded store, with one MongoDB database per mesh.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

from devrun.envoy_config import EdgeConfig
from devrun.launch import ROOT, child_env, package_present, spawn_envoy, spawn_grpc_service
from devrun.ports import free_port, port_open
from devrun.processes import ManagedProcess
from devrun.readiness import envoy_ready, grpc_serving
from tests.support.identity import JWT_SECRET

LIVEKIT_API_KEY = "mesh-test-key"
LIVEKIT_API_SECRET = "mesh-test-livekit-secret-0123456789abcdef"  # stand-in only
START_TIMEOUT_SECONDS = 60.0
AGENT_SVC = "agent_svc"
CHAT_SVC = "chat_svc"
LIVEKIT = "livekit"
ENVOY = "envoy"


class StoreLike(Protocol):
    """What the mesh needs of the `store` fixture (tests/conftest.py)."""

    @property
    def uri(self) -> str: ...


@dataclass(frozen=True)
class LiveKitEndpoint:
    """The LiveKit stand-in process (Twirp RoomService / AgentDispatchService).

    Attributes:
        port: Its port on 127.0.0.1.
        api_key: API key agent_svc signs with.
        api_secret: API secret (verify tokens with `livekit.api.TokenVerifier(api_key, api_secret)`).
    """

    port: int
    api_key: str = LIVEKIT_API_KEY
    api_secret: str = LIVEKIT_API_SECRET

    @property
    def ws_url(self) -> str:
        """What agent_svc is configured with as LIVEKIT_URL (and returns as `url` in tokens)."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """Base URL of the stand-in's HTTP side (`/_standin/participants`, `/_standin/state`)."""
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Mesh:
    """A running mesh. Addresses are `host:port` for gRPC, URLs for HTTP.

    Attributes:
        agent_addr: agent_svc gRPC address.
        chat_addr: chat_svc gRPC address, or None when chat_svc is not part of this mesh.
        envoy_url: `http://127.0.0.1:PORT` of Envoy (REST/JSON, gRPC-web); None without Envoy.
        envoy_addr: The same listener as a gRPC target (`127.0.0.1:PORT`).
        envoy_admin_port: Envoy's admin port (loopback).
        livekit: The LiveKit stand-in.
        database: The MongoDB database the services use.
        jwt_secret: The secret the services verify bearer tokens with.
        log_dir: Where each process's log file is (`<name>.log`).
    """

    agent_addr: str
    chat_addr: str | None
    envoy_url: str | None
    envoy_addr: str | None
    envoy_admin_port: int | None
    livekit: LiveKitEndpoint
    database: str
    jwt_secret: str
    log_dir: Path
    _env: dict[str, str] = field(repr=False, default_factory=dict)
    _workdir: Path = field(repr=False, default=ROOT)
    _edge: EdgeConfig | None = field(repr=False, default=None)
    _procs: dict[str, ManagedProcess] = field(repr=False, default_factory=dict)

    @property
    def env(self) -> Mapping[str, str]:
        """The environment the services run with (copy it to start another replica)."""
        return dict(self._env)

    def process(self, name: str) -> ManagedProcess:
        """The managed process `agent_svc`, `chat_svc`, `livekit` or `envoy`."""
        return self._procs[name]

    def start(self, name: str) -> None:
        """(Re)starts a stopped process on its original port and waits until it is ready."""
        if name in self._procs and self._procs[name].running():
            raise RuntimeError(f"{name} is already running")
        if name == AGENT_SVC:
            self._procs[name] = _start_service(
                AGENT_SVC, self.agent_addr, self._env, self.log_dir, self._workdir
            )
        elif name == CHAT_SVC and self.chat_addr is not None:
            self._procs[name] = _start_service(
                CHAT_SVC, self.chat_addr, self._env, self.log_dir, self._workdir
            )
        elif name == LIVEKIT:
            self._procs[name] = _start_livekit(self.livekit, self.log_dir, self._workdir)
        elif name == ENVOY and self._edge is not None:
            self._procs[name] = _start_envoy(self._edge, self.log_dir)
        else:
            raise KeyError(f"no process {name!r} in this mesh")

    def stop(self, name: str) -> None:
        """Graceful stop (SIGTERM to the process group, SIGKILL after 10 s)."""
        self._procs[name].stop()

    def kill(self, name: str) -> None:
        """Crash simulation: SIGKILL to the process group."""
        self._procs[name].kill()

    def restart(self, name: str, *, hard: bool = False) -> None:
        """Stops (SIGKILL when `hard`) and starts `name` again on the same port."""
        if hard:
            self.kill(name)
        else:
            self.stop(name)
        self.start(name)

    def close(self) -> None:
        """Stops everything, last started first."""
        for proc in reversed(list(self._procs.values())):
            proc.stop()


class MeshFactory(Protocol):
    """The `mesh_factory` fixture: `start_mesh` with the store and a folder filled in."""

    def __call__(
        self,
        *,
        database: str | None = None,
        with_chat: bool | None = None,
        with_envoy: bool = True,
        cors_allowed_origins: tuple[str, ...] = ("http://allowed.example",),
        extra_env: Mapping[str, str] | None = None,
    ) -> Mesh: ...


def start_mesh(
    store: StoreLike,
    workdir: Path,
    *,
    database: str | None = None,
    with_chat: bool | None = None,
    with_envoy: bool = True,
    cors_allowed_origins: tuple[str, ...] = ("http://allowed.example",),
    extra_env: Mapping[str, str] | None = None,
) -> Mesh:
    """Starts the stand-in, agent_svc, chat_svc and Envoy, each waited on until ready.

    Args:
        store: The running embedded store (the `store` fixture).
        workdir: Folder for logs, the Envoy config and the children's working directory.
        database: MongoDB database name; a fresh one when None.
        with_chat: Start chat_svc; None means "when the chat_svc package exists".
        with_envoy: Start Envoy.
        cors_allowed_origins: Origins Envoy's CORS policy allows.
        extra_env: More environment for agent_svc and chat_svc (overrides the defaults).

    Returns:
        The running mesh; call `close()` (the fixtures do).
    """
    if with_chat is None:
        with_chat = package_present(CHAT_SVC)
    workdir.mkdir(parents=True, exist_ok=True)
    log_dir = workdir / "logs"
    database = database or f"mesh_{uuid.uuid4().hex[:12]}"
    livekit = LiveKitEndpoint(port=free_port())
    agent_addr = f"127.0.0.1:{free_port()}"
    chat_addr = f"127.0.0.1:{free_port()}" if with_chat else None
    agent_host, agent_port = agent_addr.rsplit(":", 1)
    overrides = {
        # Outside dev mode, like production; without chat_svc agent_svc needs dev mode to skip
        # the ownership check it would make against chat_svc.
        "SYNTERA_DEV_MODE": "false" if with_chat else "true",
        "SYNTERA_JWT_SECRET": JWT_SECRET,
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "MONGODB_URI": store.uri,
        "MONGODB_DATABASE": database,
        "SHUTDOWN_GRACE_SECONDS": "2",
        "AGENT_SVC_HOST": agent_host,
        "AGENT_SVC_PORT": agent_port,
        "AGENT_SVC_ADDRESS": agent_addr,
        "LIVEKIT_URL": livekit.ws_url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "LIVEKIT_API_TIMEOUT_SECONDS": "3",
        # Children must not pick up a developer's `.env` or the test runner's PYTHONPATH quirks.
        "PYTHONPATH": str(ROOT),
    }
    if chat_addr is not None:
        chat_host, chat_port = chat_addr.rsplit(":", 1)
        overrides |= {"CHAT_SVC_HOST": chat_host, "CHAT_SVC_PORT": chat_port, "CHAT_SVC_ADDRESS": chat_addr}
    overrides |= dict(extra_env or {})
    env = child_env(overrides)
    edge = None
    envoy_port = admin_port = None
    if with_envoy:
        envoy_port, admin_port = free_port(), free_port()
        edge = EdgeConfig(
            listen_port=envoy_port,
            admin_port=admin_port,
            agent_address=agent_addr,
            chat_address=chat_addr,
            cors_allowed_origins=cors_allowed_origins,
            access_log=True,
        )
    mesh = Mesh(
        agent_addr=agent_addr,
        chat_addr=chat_addr,
        envoy_url=f"http://127.0.0.1:{envoy_port}" if envoy_port else None,
        envoy_addr=f"127.0.0.1:{envoy_port}" if envoy_port else None,
        envoy_admin_port=admin_port,
        livekit=livekit,
        database=database,
        jwt_secret=JWT_SECRET,
        log_dir=log_dir,
        _env=env,
        _workdir=workdir,
        _edge=edge,
    )
    try:
        for name in (LIVEKIT, AGENT_SVC, CHAT_SVC, ENVOY):
            if (name == CHAT_SVC and not with_chat) or (name == ENVOY and not with_envoy):
                continue
            mesh.start(name)
    except BaseException:
        mesh.close()
        raise
    return mesh


@pytest.fixture(scope="session")
def mesh(store: StoreLike, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One mesh for the whole session (chat_svc included when it exists). Do not stop its processes."""
    running = start_mesh(store, tmp_path_factory.mktemp("mesh"))
    yield running
    running.close()


@pytest.fixture
def mesh_factory(store: StoreLike, tmp_path: Path) -> Iterator[MeshFactory]:
    """Builds private meshes (same arguments as `start_mesh` after `store`); all closed at teardown."""
    built: list[Mesh] = []

    def factory(
        *,
        database: str | None = None,
        with_chat: bool | None = None,
        with_envoy: bool = True,
        cors_allowed_origins: tuple[str, ...] = ("http://allowed.example",),
        extra_env: Mapping[str, str] | None = None,
    ) -> Mesh:
        running = start_mesh(
            store,
            tmp_path / f"mesh{len(built)}",
            database=database,
            with_chat=with_chat,
            with_envoy=with_envoy,
            cors_allowed_origins=cors_allowed_origins,
            extra_env=extra_env,
        )
        built.append(running)
        return running

    yield factory
    for running in reversed(built):
        running.close()


def _start_service(
    name: str, address: str, env: Mapping[str, str], log_dir: Path, cwd: Path
) -> ManagedProcess:
    proc = spawn_grpc_service(name, name, env, log_dir / f"{name}.log", cwd)
    try:
        proc.wait_until(lambda: grpc_serving(address), START_TIMEOUT_SECONDS, f"SERVING on {address}")
    except BaseException:
        proc.stop()
        raise
    return proc


def _start_livekit(livekit: LiveKitEndpoint, log_dir: Path, cwd: Path) -> ManagedProcess:
    args = [
        sys.executable,
        "-m",
        "tests.support.livekit_standin",
        "--port",
        str(livekit.port),
        "--api-key",
        livekit.api_key,
        "--api-secret",
        livekit.api_secret,
    ]
    env = child_env({"PYTHONPATH": str(ROOT)})
    proc = ManagedProcess(LIVEKIT, args, log_dir / "livekit.log", env=env, cwd=cwd).start()
    try:
        proc.wait_until(lambda: port_open("127.0.0.1", livekit.port), START_TIMEOUT_SECONDS, "listening")
    except BaseException:
        proc.stop()
        raise
    return proc


def _start_envoy(edge: EdgeConfig, log_dir: Path) -> ManagedProcess:
    proc = spawn_envoy(edge, log_dir.parent / "envoy.json", log_dir / "envoy.log")
    try:
        proc.wait_until(lambda: envoy_ready(edge.admin_port), START_TIMEOUT_SECONDS, "ready")
    except BaseException:
        proc.stop()
        raise
    return proc
