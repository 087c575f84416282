"""A whole mesh as real processes on ephemeral loopback ports, for tests and benchmarks.

`start_mesh` starts, each waited on until ready: the LiveKit server (or what the caller launches in
its place: the tests' Twirp stand-in, for faults the real server cannot produce), agent_svc,
chat_svc, Envoy and, when asked, the voice worker. Every process logs to `<workdir>/logs/<name>.log`
(the log tail is in the error when a start fails) and is stopped, its whole process group, by
`Mesh.close()`. The services run outside dev mode with the given JWT secret, against the given
store, with one MongoDB database per mesh.

`make run` starts the same processes with fixed ports (devrun/run.py); this module is for callers
that need many meshes side by side and must restart single processes on the same port. Those ports
are taken below the kernel's ephemeral range (`devrun.ports.restartable_port`), so no outgoing
connection made while a process is down can take its port; a start that still finds its port taken
(another program bound it on purpose, for a moment) is tried again a few times.
"""

from __future__ import annotations

import secrets
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from devrun.edge_limits import EdgeLimits
from devrun.envoy_config import EdgeConfig
from devrun.launch import ROOT, child_env, spawn_envoy, spawn_grpc_service
from devrun.livekit_server import (
    LiveKitKeys,
    LiveKitServerConfig,
    server_ready,
    spawn_server,
    webhook_endpoint,
)
from devrun.ports import restartable_port
from devrun.processes import ManagedProcess, StartupError
from devrun.readiness import envoy_ready, grpc_serving
from devrun.voice import start_worker

START_TIMEOUT_SECONDS = 60.0
AGENT_SVC = "agent_svc"
CHAT_SVC = "chat_svc"
LIVEKIT = "livekit"
ENVOY = "envoy"
VOICE_WORKER = "voice_worker"

LiveKitKind = Literal["server", "standin"]

# The edge's limits for meshes: make run's, except the request rate. Tests and benchmarks drive the
# edge from one address far faster than any person; tests of the rate limit start an Envoy of
# their own.
MESH_EDGE_LIMITS = EdgeLimits(rate_limit_per_second=5000, rate_limit_burst=10_000)

# A (re)start that fails because its port is taken is tried this often in all, waiting in between.
START_ATTEMPTS = 4
PORT_RETRY_WAIT_SECONDS = 1.0
# What a process says when its port is taken (Python, gRPC, Go and Envoy spell it differently).
_PORT_TAKEN = ("address already in use", "could not bind", "failed to bind", "errno 98")


class StoreLike(Protocol):
    """What the mesh needs of a running store."""

    @property
    def uri(self) -> str: ...


class LiveKitLauncher(Protocol):
    """Starts something other than the real LiveKit server in its place (the tests' stand-in)."""

    @property
    def keys(self) -> LiveKitKeys: ...

    def launch(self, endpoint: LiveKitEndpoint, log_dir: Path, cwd: Path) -> ManagedProcess:
        """Starts it on `endpoint.port` and returns once it answers."""
        ...


@dataclass(frozen=True)
class LiveKitEndpoint:
    """The mesh's LiveKit: the real server, or the Twirp stand-in.

    Attributes:
        port: HTTP/WebSocket port on 127.0.0.1.
        api_key: API key every process signs with.
        api_secret: Its secret (verify tokens with `livekit.api.TokenVerifier(api_key, api_secret)`).
        kind: `server` (the real LiveKit server) or `standin`.
        udp_port: The real server's UDP media port (0 for the stand-in).
    """

    port: int
    api_key: str
    api_secret: str = field(repr=False)
    kind: LiveKitKind = "server"
    udp_port: int = 0

    @property
    def ws_url(self) -> str:
        """What the services are configured with as LIVEKIT_URL (and return as `url` in tokens)."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP side (the Twirp server API)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def keys(self) -> LiveKitKeys:
        return LiveKitKeys(self.api_key, self.api_secret)


@dataclass
class Mesh:
    """A running mesh. Addresses are `host:port` for gRPC, URLs for HTTP.

    Attributes:
        agent_addr: agent_svc gRPC address.
        chat_addr: chat_svc gRPC address, or None when chat_svc is not part of this mesh.
        envoy_url: `http://127.0.0.1:PORT` of Envoy (REST/JSON, gRPC-web); None without Envoy.
        envoy_addr: The same listener as a gRPC target (`127.0.0.1:PORT`).
        envoy_admin_port: Envoy's admin port (loopback).
        livekit: The LiveKit server or stand-in.
        database: The MongoDB database the services use.
        jwt_secret: The secret the services verify user tokens with.
        service_jwt_secret: The secret services sign their tokens for each other with.
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
    service_jwt_secret: str = field(repr=False, default="")
    _env: dict[str, str] = field(repr=False, default_factory=dict)
    _workdir: Path = field(repr=False, default=ROOT)
    _edge: EdgeConfig | None = field(repr=False, default=None)
    _launcher: LiveKitLauncher | None = field(repr=False, default=None)
    _webhook_urls: tuple[str, ...] = field(repr=False, default=())
    _procs: dict[str, ManagedProcess] = field(repr=False, default_factory=dict)

    @property
    def env(self) -> Mapping[str, str]:
        """The environment the services run with (copy it to start another replica)."""
        return dict(self._env)

    @property
    def worker_env(self) -> dict[str, str]:
        """The environment the voice worker runs with (offline providers, its own outbox)."""
        return dict(self._env) | {
            "VOICE_WORKER_PROVIDERS": "offline",
            "VOICE_WORKER_OUTBOX_DIR": str(self._workdir / "voice-outbox"),
            "VOICE_WORKER_HTTP_PORT": "0",
            "HF_HUB_OFFLINE": "1",
        }

    def metrics_url(self, name: str) -> str:
        """The Prometheus endpoint of `agent_svc`, `chat_svc` or `voice_worker`."""
        variable = {
            AGENT_SVC: "AGENT_SVC_METRICS_PORT",
            CHAT_SVC: "CHAT_SVC_METRICS_PORT",
            VOICE_WORKER: "VOICE_WORKER_METRICS_PORT",
        }[name]
        return f"http://127.0.0.1:{self._env[variable]}/metrics"

    def process(self, name: str) -> ManagedProcess:
        """The managed process `agent_svc`, `chat_svc`, `livekit`, `envoy` or `voice_worker`."""
        return self._procs[name]

    def start(self, name: str, extra_env: Mapping[str, str] | None = None) -> None:
        """(Re)starts a stopped process on its original port and waits until it is ready.

        `extra_env` applies to this start only (the voice worker's settings, say). A start that
        fails because the port is taken is tried again (`START_ATTEMPTS` in all): the port is
        this process's, whoever holds it now holds it for a moment at most.
        """
        if name in self._procs and self._procs[name].running():
            raise RuntimeError(f"{name} is already running")
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once(name, extra_env)
                return
            except StartupError as exc:
                if attempt == START_ATTEMPTS or not _port_taken(str(exc)):
                    raise
            time.sleep(PORT_RETRY_WAIT_SECONDS * attempt)

    def _start_once(self, name: str, extra_env: Mapping[str, str] | None) -> None:
        env = self._env | dict(extra_env or {})
        if name == AGENT_SVC:
            self._procs[name] = _start_service(AGENT_SVC, self.agent_addr, env, self.log_dir, self._workdir)
        elif name == CHAT_SVC and self.chat_addr is not None:
            self._procs[name] = _start_service(CHAT_SVC, self.chat_addr, env, self.log_dir, self._workdir)
        elif name == LIVEKIT and self._launcher is not None:
            self._procs[name] = self._launcher.launch(self.livekit, self.log_dir, self._workdir)
        elif name == LIVEKIT:
            self._procs[name] = _start_livekit(self.livekit, self.log_dir, self._workdir, self._webhook_urls)
        elif name == ENVOY and self._edge is not None:
            self._procs[name] = _start_envoy(self._edge, self.log_dir)
        elif name == VOICE_WORKER and self.livekit.kind == "server":
            env = self.worker_env | dict(extra_env or {})
            self._procs[name] = start_worker(env, self.log_dir / f"{VOICE_WORKER}.log", self._workdir)
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


def start_mesh(
    store: StoreLike,
    workdir: Path,
    *,
    jwt_secret: str,
    service_jwt_secret: str | None = None,
    database: str | None = None,
    with_chat: bool = True,
    with_envoy: bool = True,
    with_worker: bool = False,
    livekit: LiveKitLauncher | None = None,
    cors_allowed_origins: tuple[str, ...] = ("http://allowed.example",),
    extra_env: Mapping[str, str] | None = None,
    log_level: str = "INFO",
    webhook_url: str | None = None,
) -> Mesh:
    """Starts LiveKit, agent_svc, chat_svc, Envoy and optionally the voice worker, each until ready.

    Args:
        store: The running embedded store.
        workdir: Folder for logs, configs, the worker's outbox and the children's working directory.
        jwt_secret: The secret the services verify user tokens with (outside dev mode).
        service_jwt_secret: The secret services sign their tokens for each other with; a fresh
            one when None (`Mesh.service_jwt_secret` has it).
        database: MongoDB database name; a fresh one when None.
        with_chat: Start chat_svc (without it, agent_svc runs in dev mode: it has no one to ask
            about conversation ownership).
        with_envoy: Start Envoy.
        with_worker: Start the voice worker (needs the real LiveKit server).
        livekit: None for the real LiveKit server, or what starts another in its place.
        cors_allowed_origins: Origins Envoy's CORS policy allows.
        extra_env: More environment for every service (overrides the defaults).
        log_level: The services' log level (`make run` uses INFO).
        webhook_url: Where the real LiveKit server sends its webhooks. None: Envoy's
            `/api/livekit/webhook` (none without Envoy); "": nowhere.

    Returns:
        The running mesh; call `close()`.
    """
    if with_worker and livekit is not None:
        raise ValueError("the voice worker needs the real LiveKit server")
    workdir.mkdir(parents=True, exist_ok=True)
    log_dir = workdir / "logs"
    database = database or f"mesh_{uuid.uuid4().hex[:12]}"
    service_jwt_secret = service_jwt_secret or secrets.token_urlsafe(32)
    if livekit is None:
        keys = LiveKitKeys.generate()
        endpoint = LiveKitEndpoint(
            restartable_port(), keys.api_key, keys.api_secret, "server", free_udp_port()
        )
    else:
        endpoint = LiveKitEndpoint(
            restartable_port(), livekit.keys.api_key, livekit.keys.api_secret, "standin"
        )
    agent_addr = f"127.0.0.1:{restartable_port()}"
    chat_addr = f"127.0.0.1:{restartable_port()}" if with_chat else None
    agent_host, agent_port = agent_addr.rsplit(":", 1)
    overrides = {
        # Outside dev mode, like production; without chat_svc agent_svc needs dev mode to skip
        # the ownership check it would make against chat_svc.
        "SYNTERA_DEV_MODE": "false" if with_chat else "true",
        "SYNTERA_JWT_SECRET": jwt_secret,
        "SYNTERA_SERVICE_JWT_SECRET": service_jwt_secret,
        "LOG_LEVEL": log_level,
        "LOG_FORMAT": "json",
        "MONGODB_URI": store.uri,
        "MONGODB_DATABASE": database,
        "SHUTDOWN_GRACE_SECONDS": "2",
        "AGENT_SVC_HOST": agent_host,
        "AGENT_SVC_PORT": agent_port,
        "AGENT_SVC_ADDRESS": agent_addr,
        "LIVEKIT_URL": endpoint.ws_url,
        "LIVEKIT_API_KEY": endpoint.api_key,
        "LIVEKIT_API_SECRET": endpoint.api_secret,
        "LIVEKIT_API_TIMEOUT_SECONDS": "3",
        # Tests and benchmarks hold many calls at once; a quota test sets its limits in extra_env.
        "QUOTA_MAX_CONCURRENT_AGENT_SESSIONS": "0",
        # Each process its own Prometheus endpoint (see `Mesh.metrics_url`); a replica started
        # from `Mesh.env` must be given another.
        "AGENT_SVC_METRICS_PORT": str(restartable_port()),
        "CHAT_SVC_METRICS_PORT": str(restartable_port()),
        "VOICE_WORKER_METRICS_PORT": str(restartable_port()),
        # Children must not pick up a developer's `.env` or the runner's PYTHONPATH quirks.
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
        envoy_port, admin_port = restartable_port(), restartable_port()
        edge = EdgeConfig(
            listen_port=envoy_port,
            admin_port=admin_port,
            agent_address=agent_addr,
            chat_address=chat_addr,
            cors_allowed_origins=cors_allowed_origins,
            access_log=True,
            limits=MESH_EDGE_LIMITS,
        )
    if webhook_url is None:
        webhook_url = webhook_endpoint(f"http://127.0.0.1:{envoy_port}") if envoy_port else ""
    mesh = Mesh(
        agent_addr=agent_addr,
        chat_addr=chat_addr,
        envoy_url=f"http://127.0.0.1:{envoy_port}" if envoy_port else None,
        envoy_addr=f"127.0.0.1:{envoy_port}" if envoy_port else None,
        envoy_admin_port=admin_port,
        livekit=endpoint,
        database=database,
        jwt_secret=jwt_secret,
        log_dir=log_dir,
        service_jwt_secret=service_jwt_secret,
        _env=env,
        _workdir=workdir,
        _edge=edge,
        _launcher=livekit,
        _webhook_urls=(webhook_url,) if webhook_url else (),
    )
    try:
        for name in (LIVEKIT, AGENT_SVC, CHAT_SVC, ENVOY, VOICE_WORKER):
            if (
                (name == CHAT_SVC and not with_chat)
                or (name == ENVOY and not with_envoy)
                or (name == VOICE_WORKER and not with_worker)
            ):
                continue
            mesh.start(name)
    except BaseException:
        mesh.close()
        raise
    return mesh


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (see `restartable_port`)."""
    return restartable_port(kind=socket.SOCK_DGRAM)


def _port_taken(startup_error: str) -> bool:
    text = startup_error.lower()
    return any(sign in text for sign in _PORT_TAKEN)


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


def _start_livekit(
    livekit: LiveKitEndpoint, log_dir: Path, cwd: Path, webhook_urls: tuple[str, ...]
) -> ManagedProcess:
    config = LiveKitServerConfig(
        keys=livekit.keys,
        port=livekit.port,
        udp_port_start=livekit.udp_port,
        udp_ports=1,
        webhook_urls=webhook_urls,
    )
    proc = spawn_server(config, cwd / "livekit.json", log_dir / "livekit.log")
    try:
        proc.wait_until(lambda: server_ready(livekit.port), START_TIMEOUT_SECONDS, "answering")
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
