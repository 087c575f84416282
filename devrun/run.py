"""`make run`: the embedded store, agent_svc, chat_svc (when present) and Envoy, until Ctrl-C or SIGTERM.

Each child runs in its own process group (ManagedProcess), so the terminal's Ctrl-C reaches only this
runner, which then stops the children in reverse start order: nothing is left behind.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devrun.banner import print_banner
from devrun.envoy_config import DEFAULT_DESCRIPTOR, EdgeConfig
from devrun.launch import ROOT, child_env, package_present, spawn_envoy, spawn_grpc_service
from devrun.ports import port_open
from devrun.processes import ManagedProcess, StartupError
from devrun.readiness import envoy_ready, grpc_serving, port_free
from devrun.sample_audio import SampleCall, make_sample_call
from devrun.settings import RunSettings
from devrun.store import store_command

SAMPLE_CALL_FILE = "sample-call.wav"


class PortTaken(RuntimeError):
    """A port the mesh needs is already in use."""


@dataclass(frozen=True)
class PortPlan:
    """One port the runner will bind, and the variable that moves it."""

    what: str
    host: str
    port: int
    variable: str


def plan_ports(settings: RunSettings, *, with_store: bool, with_chat: bool) -> list[PortPlan]:
    plans = [
        PortPlan("agent_svc", settings.agent_host, settings.agent_port, "AGENT_SVC_PORT"),
        PortPlan("Envoy", settings.envoy_host, settings.envoy_port, "ENVOY_PORT"),
        PortPlan("Envoy admin", "127.0.0.1", settings.envoy_admin_port, "ENVOY_ADMIN_PORT"),
    ]
    if with_store:
        plans.insert(0, PortPlan("store (nx-27017)", "127.0.0.1", settings.mongodb_port, "MONGODB_PORT"))
    if with_chat:
        plans.insert(2, PortPlan("chat_svc", settings.chat_host, settings.chat_port, "CHAT_SVC_PORT"))
    return plans


def check_ports(plans: list[PortPlan]) -> None:
    """Fails before starting anything if any port is taken, naming the variable that moves it."""
    taken = [p for p in plans if not port_free(p.host, p.port)]
    if taken:
        lines = [f"  {p.what}: {p.host}:{p.port} is in use (set {p.variable} to another port)" for p in taken]
        raise PortTaken("ports needed by make run are already in use:\n" + "\n".join(lines))


class _Stop(Exception):
    """Raised at a safe point (a readiness poll) once a stop signal has arrived during start-up."""


def run(settings: RunSettings) -> int:
    """Starts everything, waits for a signal or a crashed child, stops everything; returns the exit code."""
    run_dir = (ROOT / settings.run_dir).resolve()
    logs = run_dir / "logs"
    with_store = settings.uses_embedded_store
    with_chat = package_present("chat_svc")
    if not DEFAULT_DESCRIPTOR.exists():
        print(f"error: {DEFAULT_DESCRIPTOR} is missing; run 'make generate'", file=sys.stderr)
        return 2
    if not settings.effective_dev_mode and not settings.jwt_secret:
        print(
            "error: SYNTERA_DEV_MODE is false (environment or .env) and SYNTERA_JWT_SECRET is empty: "
            "set SYNTERA_DEV_MODE=true for local development, or configure a secret (see .env.example)",
            file=sys.stderr,
        )
        return 2
    try:
        check_ports(plan_ports(settings, with_store=with_store, with_chat=with_chat))
    except PortTaken as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    mongodb_uri = f"mongodb://127.0.0.1:{settings.mongodb_port}" if with_store else settings.mongodb_uri
    agent_address = f"{settings.agent_host}:{settings.agent_port}"
    chat_address = f"{settings.chat_host}:{settings.chat_port}"
    overrides = {
        "SYNTERA_DEV_MODE": "true" if settings.effective_dev_mode else "false",
        "MONGODB_URI": mongodb_uri,
        "AGENT_SVC_HOST": settings.agent_host,
        "AGENT_SVC_PORT": str(settings.agent_port),
        "AGENT_SVC_ADDRESS": agent_address,
        "CHAT_SVC_HOST": settings.chat_host,
        "CHAT_SVC_PORT": str(settings.chat_port),
    }
    if with_chat:
        overrides["CHAT_SVC_ADDRESS"] = chat_address
    env = child_env(overrides)
    edge = EdgeConfig(
        listen_host=settings.envoy_host,
        listen_port=settings.envoy_port,
        admin_port=settings.envoy_admin_port,
        agent_address=agent_address,
        chat_address=chat_address if with_chat else None,
        cors_allowed_origins=settings.origins,
    )

    started: list[ManagedProcess] = []
    stop_requested = threading.Event()

    # The handler only records the signal: raising from it could fire between a child's spawn and
    # its registration in `started`, and that child would be orphaned.
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()

    def ready_unless_stopped(probe: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            if stop_requested.is_set():
                raise _Stop
            return probe()

        return check

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    exit_code = 0
    try:
        print("starting the mesh (logs in " + _rel(logs) + ") ...", flush=True)
        if with_store:
            (run_dir / "store").mkdir(parents=True, exist_ok=True)
            store = ManagedProcess(
                "store", store_command(run_dir / "store", settings.mongodb_port), logs / "store.log"
            ).start()
            started.append(store)
            store.wait_until(
                ready_unless_stopped(lambda: port_open("127.0.0.1", settings.mongodb_port)),
                30,
                f"listening on 127.0.0.1:{settings.mongodb_port}",
            )
            data_dir = _rel(run_dir / "store")
            print(f"  store      mongodb://127.0.0.1:{settings.mongodb_port}  (data in {data_dir})")
        services = [("agent_svc", agent_address)] + ([("chat_svc", chat_address)] if with_chat else [])
        for name, address in services:
            proc = spawn_grpc_service(name, name, env, logs / f"{name}.log")
            started.append(proc)
            proc.wait_until(
                ready_unless_stopped(functools.partial(grpc_serving, address)),
                60,
                f"SERVING on {address}",
            )
            print(f"  {name:<10} {address}  SERVING (gRPC health)")
        envoy = spawn_envoy(edge, run_dir / "envoy.json", logs / "envoy.log")
        started.append(envoy)
        envoy.wait_until(ready_unless_stopped(lambda: envoy_ready(edge.admin_port)), 30, "ready")
        print(f"  envoy      http://{settings.envoy_host}:{settings.envoy_port}  ready")
        sample = _voice_sample(run_dir) if with_chat and package_present("voice_worker") else None
        print_banner(settings, with_chat=with_chat, sample=sample)
        exit_code = _watch(started, stop_requested)
        if exit_code == 0:
            print("\nstopping ...", flush=True)
    except _Stop:
        print("\nstopping ...", flush=True)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        exit_code = 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave children running.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        for proc in reversed(started):
            proc.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started:
            print("stopped: " + ", ".join(p.name for p in reversed(started)), flush=True)
    return exit_code


def _voice_sample(run_dir: Path) -> SampleCall:
    """The recording for the banner's voice example (espeak-ng); a missing espeak-ng is only a note."""
    sample = make_sample_call(run_dir / SAMPLE_CALL_FILE)
    if sample.path is not None:
        print(f"  sample     {_rel(sample.path)}  (a voice call recording, espeak-ng)")
    else:
        print(f"  sample     skipped: {sample.problem}")
    return sample


def _watch(started: list[ManagedProcess], stop_requested: threading.Event) -> int:
    """Blocks until a stop signal (returns 0) or a child dies (returns 1)."""
    while not stop_requested.wait(0.5):
        for proc in started:
            if not proc.running():
                print(f"error: {proc.name} exited unexpectedly:\n{proc.log_tail()}", file=sys.stderr)
                return 1
    return 0


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
