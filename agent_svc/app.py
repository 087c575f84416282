"""Wires agent_svc together: `create_server` for tests and `main` for `python -m agent_svc`."""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from agent_svc.agent_keeper import AgentKeeper
from agent_svc.agent_servicer import AgentServicer
from agent_svc.agent_store import COLLECTION, AgentDirectory
from agent_svc.call_control import CallControl
from agent_svc.call_ledger import CallLedger
from agent_svc.call_servicer import RECEIVE_WEBHOOK_METHOD, CallServicer
from agent_svc.call_store import CallStore
from agent_svc.chat_calls import SERVICE_NAME, ChatCallSink
from agent_svc.chat_ownership import ChatConversationAccess
from agent_svc.conversation_cache import CachedConversationAccess
from agent_svc.conversation_ends import follow_ends
from agent_svc.livekit_access import LiveKitAccess
from agent_svc.livekit_gateway import LiveKitGateway
from agent_svc.livekit_servicer import LiveKitServicer
from agent_svc.ownership import ConversationAccess, UncheckedConversationAccess
from agent_svc.quota import QuotaGuard, QuotaLimits
from agent_svc.reconcile import Reconciler
from agent_svc.replies import build_replies
from agent_svc.settings import AgentSettings
from agent_svc.tokens import TokenMinter, TokenPolicy
from agent_svc.webhooks import WebhookIntake
from servicekit import logs, telemetry
from servicekit.backoff import Backoff
from servicekit.client import ServiceCredentials, open_channel
from servicekit.server import RunningServer, serve_until_signal, start_server
from servicekit.settings import DEV_MODE_WARNING, load_settings
from syntera.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from syntera.livekit.v1 import (
    call_service_pb2,
    call_service_pb2_grpc,
    livekit_service_pb2,
    livekit_service_pb2_grpc,
)

log = structlog.get_logger("agent_svc")

SERVICE_NAMES = (
    livekit_service_pb2.DESCRIPTOR.services_by_name["LiveKitService"].full_name,
    call_service_pb2.DESCRIPTOR.services_by_name["CallService"].full_name,
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
)
# Every MongoDB operation is bounded by this client-side timeout (pymongo CSOT).
MONGODB_TIMEOUT_MS = 5000
# How long start-up waits for MongoDB before giving up, and the (jittered) waits between tries.
STARTUP_TIMEOUT_SECONDS = 30.0
STORE_RETRY_MIN_SECONDS = 0.25
STORE_RETRY_MAX_SECONDS = 2.0

Closer = Callable[[], Awaitable[None]]


@dataclass
class AgentServer(RunningServer):
    """The running agent_svc: a `RunningServer` that also releases its clients when stopped."""

    closers: list[Closer] = field(default_factory=list)

    async def stop(self, grace_seconds: float) -> None:
        await super().stop(grace_seconds)
        await self.close_clients()

    async def close_clients(self) -> None:
        while self.closers:
            await self.closers.pop()()


async def create_server(
    settings: AgentSettings,
    *,
    conversations: ConversationAccess | None = None,
    mongo_client: AsyncMongoClient[dict[str, Any]] | None = None,
    background: bool = True,
) -> AgentServer:
    """Starts agent_svc on `settings.host:settings.port` (port 0 picks one).

    Health turns SERVING once MongoDB is reachable and the built-in agent profile is seeded. Then
    the call background work starts: sending call records to chat_svc, reconciling the calls with
    the LiveKit server, and dispatching the agent again where it left its user.

    Args:
        settings: Parsed settings.
        conversations: Ownership checks; by default chat_svc at CHAT_SVC_ADDRESS (or, in dev mode
            without it, no checks).
        mongo_client: A client to use instead of one built from MONGODB_URI (not closed here).
        background: Run the call background work; False in the extra worker processes (one
            process of a replica does it, see AGENT_SVC_WORKERS).
    """
    closers: list[Closer] = []
    if settings.livekit_dev_defaults:
        log.warning(
            "DEV MODE: LiveKit is not configured; using the LiveKit dev-server defaults",
            livekit_url=settings.livekit_url,
            livekit_api_key=settings.livekit_api_key,
            hint="start `livekit-server --dev`, or set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
        )
    if mongo_client is None:
        mongo_client = AsyncMongoClient(settings.mongodb_uri, tz_aware=True, timeoutMS=MONGODB_TIMEOUT_MS)
        closers.append(mongo_client.close)
    chat_channel = _chat_channel(settings, closers)
    cache: CachedConversationAccess | None = None
    if conversations is None:
        conversations = _conversation_access(settings, chat_channel)
        if chat_channel is not None and settings.conversation_cache_size > 0:
            cache = CachedConversationAccess(conversations, settings.conversation_cache_size)
            conversations = cache
    gateway = LiveKitGateway(
        settings.livekit_url,
        settings.livekit_api_key,
        settings.livekit_api_secret.get_secret_value(),
        settings.livekit_api_timeout_seconds,
    )
    closers.append(gateway.aclose)
    minter = TokenMinter(
        TokenPolicy(
            url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret.get_secret_value(),
            agent_name=settings.livekit_agent_name,
            default_ttl_seconds=settings.livekit_token_ttl_seconds,
            min_ttl_seconds=settings.livekit_token_ttl_min_seconds,
            max_ttl_seconds=settings.livekit_token_ttl_max_seconds,
            empty_timeout_seconds=settings.livekit_room_empty_timeout_seconds,
            max_participants=settings.livekit_room_max_participants,
        )
    )
    database = mongo_client[settings.mongodb_database]
    directory = AgentDirectory(database[COLLECTION])
    call_store = CallStore(database)
    sink = None
    if chat_channel is not None:
        credentials = ServiceCredentials(settings.service_jwt_secret.get_secret_value(), SERVICE_NAME)
        sink = ChatCallSink(chat_channel, credentials, settings.chat_svc_timeout_seconds)
    ledger = CallLedger(call_store, sink)
    guard = QuotaGuard(
        call_store,
        QuotaLimits(
            concurrent_agent_sessions=settings.quota_max_concurrent_agent_sessions,
            agent_minutes_per_month=settings.quota_agent_minutes_per_month,
            participant_minutes_per_month=settings.quota_participant_minutes_per_month,
            hold_seconds=settings.call_admission_hold_seconds,
        ),
    )
    keeper = (
        AgentKeeper(ledger, gateway, settings.livekit_agent_name, settings.agent_join_grace_seconds)
        if settings.agent_redispatch
        else None
    )
    if keeper is not None:
        ledger.on_change(keeper.notice)
    reconciler = Reconciler(ledger, gateway, guard)
    livekit_servicer = LiveKitServicer(
        LiveKitAccess(minter, gateway, conversations, CallControl(guard, ledger))
    )
    call_servicer = CallServicer(
        WebhookIntake(settings.livekit_api_key, settings.livekit_api_secret.get_secret_value(), ledger), guard
    )
    agent_servicer = AgentServicer(directory, build_replies(settings, directory, closers))

    def register_livekit(server: grpc.aio.Server) -> None:
        livekit_service_pb2_grpc.add_LiveKitServiceServicer_to_server(livekit_servicer, server)

    def register_calls(server: grpc.aio.Server) -> None:
        call_service_pb2_grpc.add_CallServiceServicer_to_server(call_servicer, server)

    def register_agents(server: grpc.aio.Server) -> None:
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(agent_servicer, server)

    try:
        base = await start_server(
            host=settings.host,
            port=settings.port,
            tokens=settings.token_policy(),
            registrars=[register_livekit, register_calls, register_agents],
            service_names=SERVICE_NAMES,
            self_authenticated=[RECEIVE_WEBHOOK_METHOD],
        )
    except BaseException:
        await _close_all(closers)
        raise
    running = AgentServer(base.server, base.port, base.health, base.service_names, closers)
    try:
        await _prepare_store(directory, call_store)
    except BaseException:
        await running.server.stop(0)
        await running.close_clients()
        raise
    if background:
        running.closers.append(_start_call_work(settings, ledger, reconciler, keeper))
    if cache is not None and chat_channel is not None:
        credentials = ServiceCredentials(settings.service_jwt_secret.get_secret_value(), SERVICE_NAME)
        running.closers.append(_start_following_ends(chat_channel, credentials, cache))
    await running.set_serving(True)
    log.info("agent_svc ready", port=running.port, livekit_url=settings.livekit_url)
    return running


def _chat_channel(settings: AgentSettings, closers: list[Closer]) -> grpc.aio.Channel | None:
    """One channel to chat_svc (ownership checks and call records), or None without chat_svc."""
    if not settings.chat_svc_address:
        return None
    channel = open_channel(settings.chat_svc_address)

    async def close_channel() -> None:
        await channel.close(None)

    closers.append(close_channel)
    return channel


def _conversation_access(settings: AgentSettings, channel: grpc.aio.Channel | None) -> ConversationAccess:
    if channel is None:
        # Settings allow this only in dev mode.
        log.warning(
            "DEV MODE: CHAT_SVC_ADDRESS is empty; conversation ownership is NOT checked for user calls "
            "and call records stay in agent_svc",
        )
        return UncheckedConversationAccess()
    return ChatConversationAccess(channel, settings.chat_svc_timeout_seconds)


def _start_call_work(
    settings: AgentSettings, ledger: CallLedger, reconciler: Reconciler, keeper: AgentKeeper | None
) -> Closer:
    """Starts the call background tasks; returns what stops them."""
    stop = asyncio.Event()

    async def keep_agents() -> None:
        assert keeper is not None  # noqa: S101 - only scheduled with a keeper
        await keeper.adopt_running()
        await keeper.run(stop)

    tasks = [asyncio.create_task(ledger.run_sync(stop), name="call-sync")]
    if settings.call_reconcile_seconds > 0:
        tasks.append(
            asyncio.create_task(reconciler.run(settings.call_reconcile_seconds, stop), name="call-reconcile")
        )
    if keeper is not None:
        tasks.append(asyncio.create_task(keep_agents(), name="agent-keeper"))

    async def stop_all() -> None:
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=5.0)
        for task in pending:
            task.cancel()
        await ledger.aclose()

    return stop_all


def _start_following_ends(
    channel: grpc.aio.Channel, credentials: ServiceCredentials, cache: CachedConversationAccess
) -> Closer:
    """Follows chat_svc's conversation ends for the cache; returns what stops it."""
    stop = asyncio.Event()
    task = asyncio.create_task(follow_ends(channel, credentials, cache, stop), name="conversation-ends")

    async def stop_following() -> None:
        stop.set()
        _, pending = await asyncio.wait({task}, timeout=5.0)
        for waiting in pending:
            waiting.cancel()

    return stop_following


async def _prepare_store(directory: AgentDirectory, calls: CallStore) -> None:
    """Seeds the store, retrying while MongoDB is not reachable yet (health stays NOT_SERVING)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    backoff = Backoff(STORE_RETRY_MIN_SECONDS, STORE_RETRY_MAX_SECONDS)
    while True:
        try:
            await directory.prepare()
            await calls.prepare()
            return
        except PyMongoError as err:
            if time.monotonic() >= deadline:
                raise
            log.warning("mongodb not ready; retrying", error_type=type(err).__name__)
            await backoff.wait()


async def _close_all(closers: list[Closer]) -> None:
    while closers:
        await closers.pop()()


async def _run(settings: AgentSettings, background: bool) -> None:
    running = await create_server(settings, background=background)
    # Everything made so far (modules, clients, the server) lives as long as the process: keep it
    # out of the garbage collector's full passes, which walked all of it (~175,000 objects, tens
    # of milliseconds on this machine) in the middle of calls and set the token path's p99.
    gc.freeze()
    await serve_until_signal(running, settings.shutdown_grace_seconds)


def main() -> None:
    """Entry point of `python -m agent_svc`: settings once, then serve until SIGTERM/SIGINT.

    With AGENT_SVC_WORKERS above 1 this process also starts the other workers (`worker_main`) on
    the same port, and stops them when it stops.
    """
    settings = load_settings(AgentSettings, "agent_svc")
    logs.configure(settings.log_level, settings.log_format, service="agent_svc")
    if settings.dev_mode:
        log.warning(DEV_MODE_WARNING)
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER_ENTRY, str(index)])  # noqa: S603 - our interpreter, fixed code
        for index in range(1, settings.worker_count)
    ]
    if workers:
        log.info("worker processes started", workers=settings.worker_count, port=settings.port)
    try:
        _serve(settings, settings.metrics_port, background=True)
    finally:
        _stop_workers(workers, settings.shutdown_grace_seconds)


def worker_main() -> None:
    """An extra worker process: the same server on the same port, without the background work."""
    settings = load_settings(AgentSettings, "agent_svc")
    logs.configure(settings.log_level, settings.log_format, service="agent_svc")
    structlog.contextvars.bind_contextvars(worker=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    # Metrics on a port of its own: the configured one belongs to the first process.
    _serve(settings, 0, background=False)


# How the first process starts the others (their stdout and stderr are its own).
_WORKER_ENTRY = "from agent_svc.app import worker_main; worker_main()"


def _serve(settings: AgentSettings, metrics_port: int, *, background: bool) -> None:
    try:
        with telemetry.running("agent_svc", settings.host, metrics_port, settings.otlp_endpoint):
            asyncio.run(_run(settings, background))
    except PyMongoError as err:
        log.error("mongodb unreachable at start-up", error_type=type(err).__name__)
        raise SystemExit(1) from None


def _stop_workers(workers: list[subprocess.Popen[bytes]], grace_seconds: float) -> None:
    """SIGTERM to each worker (they drain like this process), SIGKILL to any still there after."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds + 5.0
    for worker in workers:
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
