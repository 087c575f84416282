"""`make run`: the store, the LiveKit server, agent_svc, chat_svc, Envoy and the voice worker, until Ctrl-C.

Three steps. `plan_run` decides everything and checks it (settings, LiveKit keys, ports) before
anything starts, so a mistake costs nothing. `_Runner` then starts each process in order and waits
until it is ready, and supervises them until a stop signal (Ctrl-C, SIGTERM, SIGHUP) or a crashed
child; it stops them in reverse start order. Each child runs in its own process group
(ManagedProcess), so the terminal's Ctrl-C reaches only this runner: nothing is left behind.

LiveKit: unless LIVEKIT_URL names a server, make run starts the open-source LiveKit server on
loopback (LIVEKIT_PORT) with keys made for this run (or LIVEKIT_API_KEY / LIVEKIT_API_SECRET) and
gives agent_svc, chat_svc and the voice worker the same URL and keys, in dev mode and outside it.
Without the server binary (no Go at bootstrap) the mesh still runs, without LiveKit and without the
worker, and the banner says so loudly. A worker that cannot start is reported, not fatal: calls
connect without it and everything else works.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, cast

from devrun.banner import CallSetup, print_banner
from devrun.envoy_config import DEFAULT_DESCRIPTOR, EdgeConfig
from devrun.launch import ROOT, child_env, spawn_envoy, spawn_grpc_service
from devrun.livekit_server import START_TIMEOUT_SECONDS as LIVEKIT_START_TIMEOUT_SECONDS
from devrun.livekit_server import (
    LiveKitKeys,
    LiveKitServerConfig,
    server_ready,
    spawn_server,
    webhook_endpoint,
)
from devrun.ports import port_open
from devrun.processes import ManagedProcess, StartupError
from devrun.readiness import envoy_ready, grpc_serving, port_free
from devrun.sample_audio import SampleCall, make_sample_call
from devrun.settings import RunSettings
from devrun.store import store_command
from devrun.voice import START_TIMEOUT_SECONDS as WORKER_START_TIMEOUT_SECONDS
from devrun.voice import spawn_worker, worker_registered

if TYPE_CHECKING:
    from voice_worker.settings import VoiceWorkerSettings

SAMPLE_CALL_FILE = "sample-call.wav"
STORE_START_TIMEOUT_SECONDS = 30.0
SERVICE_START_TIMEOUT_SECONDS = 60.0
ENVOY_START_TIMEOUT_SECONDS = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class PlanError(RuntimeError):
    """make run cannot start as configured; said before anything starts."""


class PortTaken(PlanError):
    """A port the mesh needs is already in use."""


# --- plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortPlan:
    """One port the runner will bind, and the variable that moves it."""

    what: str
    host: str
    port: int
    variable: str
    protocol: Literal["tcp", "udp"] = "tcp"


@dataclass(frozen=True)
class LiveKitPlan:
    """The LiveKit server every process is given, and whether make run starts it.

    Attributes:
        url: LIVEKIT_URL of the services and the worker (and the `url` callers get with tokens).
        keys: The API key and secret they all use.
        server: The local server's config; None when LIVEKIT_URL names a server elsewhere.
        binary: Where the local server's executable is looked for (None for a server elsewhere).
    """

    url: str
    keys: LiveKitKeys
    server: LiveKitServerConfig | None = None
    binary: Path | None = None

    @property
    def binary_present(self) -> bool:
        return self.binary is not None and self.binary.is_file() and os.access(self.binary, os.X_OK)

    @property
    def starts_server(self) -> bool:
        return self.server is not None and self.binary_present

    @property
    def missing(self) -> bool:
        """True when make run should start the server but has no binary: calls cannot connect."""
        return self.server is not None and not self.binary_present


@dataclass(frozen=True)
class RunPlan:
    """Everything `make run` starts, decided up front.

    Attributes:
        settings: What was read from the environment and `.env`.
        run_dir: Where logs, rendered configs, the store's data and the worker's outbox go.
        with_store: Start the embedded store.
        livekit: The LiveKit server and its keys.
        env: The services' environment (holds secrets: never printed).
        edge: Envoy's config.
    """

    settings: RunSettings
    run_dir: Path
    with_store: bool
    livekit: LiveKitPlan
    env: dict[str, str] = field(repr=False)
    edge: EdgeConfig

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def agent_address(self) -> str:
        return f"{self.settings.agent_host}:{self.settings.agent_port}"

    @property
    def chat_address(self) -> str:
        return f"{self.settings.chat_host}:{self.settings.chat_port}"

    @property
    def worker_env(self) -> dict[str, str]:
        # The same outbox as the banner's `voice_worker simulate` example: turns left by either are
        # sent by the next worker that starts.
        return self.env | {"VOICE_WORKER_OUTBOX_DIR": str(self.run_dir / "voice-outbox")}


def plan_livekit(settings: RunSettings) -> LiveKitPlan:
    """The server to use: LIVEKIT_URL's, or a local one with the given keys or keys made for this run.

    Raises:
        PlanError: Only one of LIVEKIT_API_KEY / LIVEKIT_API_SECRET is set, or LIVEKIT_URL without them.
    """
    key, secret = settings.livekit_api_key, settings.livekit_api_secret.get_secret_value()
    if bool(key) != bool(secret):
        raise PlanError(
            "set both LIVEKIT_API_KEY and LIVEKIT_API_SECRET, or neither (make run then makes keys for "
            "its own LiveKit server)"
        )
    if settings.livekit_external:
        if not key:
            raise PlanError(
                "LIVEKIT_URL is set, so LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be too (that server's "
                "keys); or unset LIVEKIT_URL and make run starts a LiveKit server of its own"
            )
        return LiveKitPlan(settings.livekit_url, LiveKitKeys(key, secret))
    keys = LiveKitKeys(key, secret) if key else LiveKitKeys.generate()
    # The server tells the mesh about its rooms through the edge (call records, usage, quota).
    config = LiveKitServerConfig(
        keys=keys, port=settings.livekit_port, webhook_urls=(webhook_endpoint(_edge_url(settings)),)
    )
    return LiveKitPlan(config.ws_url, keys, config, settings.livekit_server_path)


def _edge_url(settings: RunSettings) -> str:
    """Envoy as a process on this machine reaches it (an any-address listener on loopback)."""
    host = settings.envoy_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared with, not bound to
        host = "127.0.0.1"
    return f"http://{host}:{settings.envoy_port}"


def plan_ports(
    settings: RunSettings,
    *,
    with_store: bool,
    with_chat: bool,
    livekit: LiveKitServerConfig | None = None,
    with_worker: bool = False,
) -> list[PortPlan]:
    """Every port make run will bind, in start order; `livekit` is the local server it starts, if any."""
    plans: list[PortPlan] = []
    if with_store:
        plans.append(PortPlan("store (nx-27017)", "127.0.0.1", settings.mongodb_port, "MONGODB_PORT"))
    if livekit is not None:
        plans.append(PortPlan("LiveKit server", "127.0.0.1", livekit.port, "LIVEKIT_PORT"))
        start, end = livekit.udp_range
        plans += [
            PortPlan("LiveKit media", "127.0.0.1", udp, "LIVEKIT_PORT", "udp")
            for udp in range(start, end + 1)
        ]
    plans.append(PortPlan("agent_svc", settings.agent_host, settings.agent_port, "AGENT_SVC_PORT"))
    plans.append(
        PortPlan(
            "agent_svc metrics", settings.agent_host, settings.agent_metrics_port, "AGENT_SVC_METRICS_PORT"
        )
    )
    if with_chat:
        plans.append(PortPlan("chat_svc", settings.chat_host, settings.chat_port, "CHAT_SVC_PORT"))
        plans.append(
            PortPlan(
                "chat_svc metrics", settings.chat_host, settings.chat_metrics_port, "CHAT_SVC_METRICS_PORT"
            )
        )
    plans += [
        PortPlan("Envoy", settings.envoy_host, settings.envoy_port, "ENVOY_PORT"),
        PortPlan("Envoy admin", "127.0.0.1", settings.envoy_admin_port, "ENVOY_ADMIN_PORT"),
    ]
    if with_worker and settings.worker_http_port:  # port 0: the worker picks a free one
        plans.append(
            PortPlan(
                "voice worker health",
                settings.worker_http_host,
                settings.worker_http_port,
                "VOICE_WORKER_HTTP_PORT",
            )
        )
    if with_worker:
        plans.append(
            PortPlan(
                "voice worker metrics",
                settings.worker_http_host,
                settings.worker_metrics_port,
                "VOICE_WORKER_METRICS_PORT",
            )
        )
    return plans


def check_ports(plans: list[PortPlan]) -> None:
    """Fails before starting anything if any port is taken, naming the variable that moves it."""
    taken = [p for p in plans if not _bindable(p)]
    if taken:
        lines = [f"  {p.what}: {_describe(p)} is in use (set {p.variable} to another port)" for p in taken]
        if any(p.protocol == "udp" for p in taken):
            lines.append("  (the LiveKit server's UDP media ports are LIVEKIT_PORT + 2 and + 3)")
        raise PortTaken("ports needed by make run are already in use:\n" + "\n".join(lines))


def check_identity(settings: RunSettings) -> None:
    """Outside dev mode both secrets are needed; in dev mode, whose secrets are public, loopback only.

    The services refuse the same at start-up; said here first, before anything starts.
    """
    if settings.effective_dev_mode:
        public = settings.public_hosts()
        if public:
            raise PlanError(
                "dev mode listens on loopback addresses only (its JWT secrets are public), but "
                f"{', '.join(public)}: use 127.0.0.1, or set SYNTERA_DEV_MODE=false with your own "
                "secrets (see .env.example)"
            )
        return
    for variable, secret in (
        ("SYNTERA_JWT_SECRET", settings.jwt_secret),
        ("SYNTERA_SERVICE_JWT_SECRET", settings.service_jwt_secret),
    ):
        if not secret.get_secret_value():
            raise PlanError(
                f"SYNTERA_DEV_MODE is false (environment or .env) and {variable} is empty: "
                "set SYNTERA_DEV_MODE=true for local development, or configure the secrets "
                "(two different ones, see .env.example)"
            )


def plan_run(settings: RunSettings) -> RunPlan:
    """Decides what to start and checks it can start; nothing runs yet.

    Raises:
        PlanError: A setting makes the run impossible, or a port is taken (the message says which).
    """
    if not DEFAULT_DESCRIPTOR.exists():
        raise PlanError(f"{DEFAULT_DESCRIPTOR} is missing; run 'make generate'")
    check_identity(settings)
    livekit = plan_livekit(settings)
    with_store = settings.uses_embedded_store
    check_ports(
        plan_ports(
            settings,
            with_store=with_store,
            with_chat=True,
            livekit=livekit.server if livekit.starts_server else None,
            # The worker has nothing to register with when the LiveKit server is missing.
            with_worker=not livekit.missing,
        )
    )
    agent_address = f"{settings.agent_host}:{settings.agent_port}"
    chat_address = f"{settings.chat_host}:{settings.chat_port}"
    return RunPlan(
        settings=settings,
        run_dir=(ROOT / settings.run_dir).resolve(),
        with_store=with_store,
        livekit=livekit,
        env=child_env(_overrides(settings, livekit, with_store=with_store)),
        edge=EdgeConfig(
            listen_host=settings.envoy_host,
            listen_port=settings.envoy_port,
            admin_port=settings.envoy_admin_port,
            agent_address=agent_address,
            chat_address=chat_address,
            cors_allowed_origins=settings.origins,
            otlp_endpoint=settings.otlp_endpoint or None,
        ),
    )


def _overrides(settings: RunSettings, livekit: LiveKitPlan, *, with_store: bool) -> dict[str, str]:
    """What every child is told on top of this environment: where the others are, and LiveKit.

    LiveKit's URL and keys are given even when the local server is missing, so agent_svc still
    starts (outside dev mode it insists on them) and tokens work; room calls then say UNAVAILABLE.
    """
    mongodb_uri = f"mongodb://127.0.0.1:{settings.mongodb_port}" if with_store else settings.mongodb_uri
    return {
        "SYNTERA_DEV_MODE": "true" if settings.effective_dev_mode else "false",
        "MONGODB_URI": mongodb_uri,
        "AGENT_SVC_HOST": settings.agent_host,
        "AGENT_SVC_PORT": str(settings.agent_port),
        "AGENT_SVC_ADDRESS": f"{settings.agent_host}:{settings.agent_port}",
        "CHAT_SVC_HOST": settings.chat_host,
        "CHAT_SVC_PORT": str(settings.chat_port),
        "CHAT_SVC_ADDRESS": f"{settings.chat_host}:{settings.chat_port}",
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.keys.api_key,
        "LIVEKIT_API_SECRET": livekit.keys.api_secret,
        # The ports make run checked and prints; each process serves its metrics there.
        "AGENT_SVC_METRICS_PORT": str(settings.agent_metrics_port),
        "CHAT_SVC_METRICS_PORT": str(settings.chat_metrics_port),
        "VOICE_WORKER_METRICS_PORT": str(settings.worker_metrics_port),
    }


def _bindable(plan: PortPlan) -> bool:
    return port_free(plan.host, plan.port) if plan.protocol == "tcp" else _udp_free(plan.host, plan.port)


def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _describe(plan: PortPlan) -> str:
    return f"{plan.host}:{plan.port}" + ("/udp" if plan.protocol == "udp" else "")


# --- start and supervise ------------------------------------------------------------------------


class _Stop(Exception):
    """Raised at a safe point (a readiness poll) once a stop signal has arrived during start-up."""


@dataclass(frozen=True)
class _WorkerStatus:
    providers: str = ""
    problem: str = ""


class _Runner:
    """Starts a plan's processes in order, supervises them, and stops them in reverse order."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.started: list[ManagedProcess] = []
        self.stop_requested = threading.Event()

    def on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        # Only records the signal: raising from here could fire between a child's spawn and its
        # registration in `started`, and that child would be orphaned.
        self.stop_requested.set()

    def run(self, page_url: str | None) -> int:
        """Starts everything, prints the banner, then waits; returns the exit code."""
        try:
            calls = self.start_all(page_url)
            plan = self.plan
            sample = _voice_sample(plan.run_dir)
            print_banner(plan.settings, with_chat=True, sample=sample, calls=calls)
            exit_code = self.supervise()
        except _Stop:
            exit_code = 0
        except StartupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if exit_code == 0:
            print("\nstopping ...", flush=True)
        return exit_code

    def start_all(self, page_url: str | None) -> CallSetup:
        plan = self.plan
        print("starting the mesh (logs in " + _rel(plan.logs) + ") ...", flush=True)
        if plan.with_store:
            self.start_store()
        self.start_livekit()
        self.start_services()
        self.start_envoy()
        worker = self.start_worker()
        lk = plan.livekit
        return CallSetup(
            page_url=page_url,
            livekit_url=lk.url,
            livekit_log=plan.logs / "livekit.log" if lk.starts_server else None,
            livekit_missing=lk.binary if lk.missing else None,
            worker_log=plan.logs / "voice_worker.log",
            worker_providers=worker.providers,
            worker_problem=worker.problem,
        )

    def start_store(self) -> None:
        port = self.plan.settings.mongodb_port
        data = self.plan.run_dir / "store"
        data.mkdir(parents=True, exist_ok=True)
        store = ManagedProcess("store", store_command(data, port), self.plan.logs / "store.log").start()
        self._await(
            store,
            lambda: port_open("127.0.0.1", port),
            STORE_START_TIMEOUT_SECONDS,
            f"listening on 127.0.0.1:{port}",
        )
        print(f"  store      mongodb://127.0.0.1:{port}  (data in {_rel(data)})")

    def start_livekit(self) -> None:
        lk = self.plan.livekit
        config = lk.server
        if config is None:
            print(f"  livekit    {lk.url}  (LIVEKIT_URL: make run starts no server)")
            return
        if not lk.starts_server:
            print(f"  livekit    NOT STARTED: {lk.binary} is missing (see below)", flush=True)
            return
        proc = spawn_server(
            config,
            self.plan.run_dir / "livekit.json",
            self.plan.logs / "livekit.log",
            base_env=os.environ,
            binary=lk.binary,
        )
        self._await(
            proc,
            lambda: server_ready(config.port),
            LIVEKIT_START_TIMEOUT_SECONDS,
            f"answering on {config.http_url}",
        )
        start, end = config.udp_range
        print(f"  livekit    {lk.url}  ready (loopback only; media on UDP {start}-{end})")

    def start_services(self) -> None:
        plan = self.plan
        for name, address in (("agent_svc", plan.agent_address), ("chat_svc", plan.chat_address)):
            proc = spawn_grpc_service(name, name, plan.env, plan.logs / f"{name}.log")
            self._await(
                proc,
                functools.partial(grpc_serving, address),
                SERVICE_START_TIMEOUT_SECONDS,
                f"SERVING on {address}",
            )
            print(f"  {name:<10} {address}  SERVING (gRPC health)")

    def start_envoy(self) -> None:
        plan = self.plan
        edge = plan.edge
        envoy = spawn_envoy(edge, plan.run_dir / "envoy.json", plan.logs / "envoy.log")
        self._await(envoy, lambda: envoy_ready(edge.admin_port), ENVOY_START_TIMEOUT_SECONDS, "ready")
        print(f"  envoy      http://{plan.settings.envoy_host}:{plan.settings.envoy_port}  ready")

    def start_worker(self) -> _WorkerStatus:
        """The voice worker, once registered with LiveKit; a failure is reported, not fatal."""
        plan = self.plan
        if plan.livekit.missing:
            return _WorkerStatus(problem="there is no LiveKit server to register with")
        settings, problem = _worker_settings(plan.worker_env)
        if settings is None:
            print(f"warning: the voice worker cannot start: {problem}", file=sys.stderr, flush=True)
            return _WorkerStatus(problem=problem)
        log = plan.logs / "voice_worker.log"
        offset = _log_size(log)  # only what this run appends counts, not an earlier run's mark
        print("  voice_worker starting (loading speech models, registering with LiveKit) ...", flush=True)
        proc = spawn_worker(plan.worker_env, log)
        try:
            self._await(
                proc,
                lambda: worker_registered(log, offset),
                WORKER_START_TIMEOUT_SECONDS,
                "registered with LiveKit",
            )
        except StartupError as exc:
            # Calls still connect and the rest of the mesh is useful: report it loudly and go on.
            self.started.remove(proc)
            proc.stop()
            print(f"warning: the voice worker did not start: {exc}", file=sys.stderr, flush=True)
            return _WorkerStatus(problem=_one_line_reason(exc, proc))
        providers = providers_summary(settings)
        print(f"  voice_worker registered with LiveKit ({providers})")
        return _WorkerStatus(providers=providers)

    def supervise(self) -> int:
        """Blocks until a stop signal (returns 0) or a child dies (returns 1)."""
        while not self.stop_requested.wait(0.5):
            for proc in self.started:
                if not proc.running():
                    print(f"error: {proc.name} exited unexpectedly:\n{proc.log_tail()}", file=sys.stderr)
                    return 1
        return 0

    def stop_all(self) -> None:
        """Stops every started child, last started first."""
        for proc in reversed(self.started):
            proc.stop()
        if self.started:
            print("stopped: " + ", ".join(p.name for p in reversed(self.started)), flush=True)

    def _await(self, proc: ManagedProcess, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Registers `proc` for shutdown, then waits until `probe` holds or a stop signal arrives."""
        self.started.append(proc)

        def check() -> bool:
            if self.stop_requested.is_set():
                raise _Stop
            return probe()

        proc.wait_until(check, timeout, what)


def run(settings: RunSettings, *, page_url: str | None = None) -> int:
    """Plans, starts everything, waits for a signal or a crashed child, stops everything.

    Args:
        settings: What make run reads from the environment and `.env`.
        page_url: The call page's address, when `python -m devrun` serves it (the banner sends
            newcomers there).

    Returns:
        The exit code: 0 after a stop signal, 1 when a child failed, 2 when the plan is impossible.
    """
    try:
        plan = plan_run(settings)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runner = _Runner(plan)
    previous = {sig: signal.signal(sig, runner.on_signal) for sig in STOP_SIGNALS}
    try:
        return runner.run(page_url)
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave children running.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        runner.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def providers_summary(settings: VoiceWorkerSettings) -> str:
    """Which providers the worker's calls use by default, in words (no keys)."""
    if settings.default_mode == "cloud":
        models = f"{settings.cloud_stt_model}, {settings.cloud_llm_model}, {settings.cloud_tts_model}"
        return f"cloud providers: LiveKit Inference {models}"
    llm = (
        f"LLM {settings.llm_model} at {settings.llm_base_url}"
        if settings.llm_base_url
        else "scripted responder"
    )
    return f"offline providers: faster-whisper, {llm}, {settings.offline_tts_model}; no cloud keys needed"


def _worker_settings(env: dict[str, str]) -> tuple[VoiceWorkerSettings | None, str]:
    """The settings the worker will read (this environment, then ROOT/.env), or why it would refuse them.

    Read here first so that a bad setting is named at once instead of after a spawn and a timeout.
    """
    from pydantic import ValidationError

    from servicekit.settings import describe_errors
    from voice_worker.settings import VoiceWorkerSettings

    try:
        # Init values outrank `.env`, as the child's environment does; unknown names are ignored.
        return VoiceWorkerSettings(_env_file=ROOT / ".env", **cast(dict[str, Any], env)), ""
    except ValidationError as exc:
        return None, describe_errors(exc)


def _one_line_reason(exc: StartupError, proc: ManagedProcess) -> str:
    """The first line of a start-up failure and the log's last line: enough for the banner."""
    first = str(exc).splitlines()[0].rstrip(":")
    last = next((line.strip() for line in reversed(proc.log_tail(5).splitlines()) if line.strip()), "")
    return f"{first} ({last[:160]})" if last else first


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _voice_sample(run_dir: Path) -> SampleCall:
    """The recording for the banner's voice example (espeak-ng); a missing espeak-ng is only a note."""
    sample = make_sample_call(run_dir / SAMPLE_CALL_FILE)
    if sample.path is not None:
        print(f"  sample     {_rel(sample.path)}  (a voice call recording, espeak-ng)")
    else:
        print(f"  sample     skipped: {sample.problem}")
    return sample


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
