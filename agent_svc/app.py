"""Wires agent_svc together: `create_server` for tests and `main` for `python -m agent_svc`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from pydantic import ValidationError
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from agent_svc.agent_servicer import AgentServicer
from agent_svc.agent_store import COLLECTION, AgentDirectory
from agent_svc.chat_ownership import ChatConversationAccess
from agent_svc.livekit_access import LiveKitAccess
from agent_svc.livekit_gateway import LiveKitGateway
from agent_svc.livekit_servicer import LiveKitServicer
from agent_svc.ownership import ConversationAccess, UncheckedConversationAccess
from agent_svc.replies import build_replies
from agent_svc.settings import AgentSettings
from agent_svc.tokens import TokenMinter, TokenPolicy
from servicekit import logs, telemetry
from servicekit.client import open_channel
from servicekit.server import RunningServer, serve_until_signal, start_server
from servicekit.settings import DEV_MODE_WARNING
from syntera.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from syntera.livekit.v1 import livekit_service_pb2, livekit_service_pb2_grpc

log = structlog.get_logger("agent_svc")

SERVICE_NAMES = (
    livekit_service_pb2.DESCRIPTOR.services_by_name["LiveKitService"].full_name,
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
)
# Every MongoDB operation is bounded by this client-side timeout (pymongo CSOT).
MONGODB_TIMEOUT_MS = 5000
# How long start-up waits for MongoDB before giving up.
STARTUP_TIMEOUT_SECONDS = 30.0

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
) -> AgentServer:
    """Starts agent_svc on `settings.host:settings.port` (port 0 picks one).

    Health turns SERVING once MongoDB is reachable and the built-in agent profile is seeded.

    Args:
        settings: Parsed settings.
        conversations: Ownership checks; by default chat_svc at CHAT_SVC_ADDRESS (or, in dev mode
            without it, no checks).
        mongo_client: A client to use instead of one built from MONGODB_URI (not closed here).
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
    if conversations is None:
        conversations = _conversation_access(settings, closers)
    gateway = LiveKitGateway(
        settings.livekit_url,
        settings.livekit_api_key,
        settings.livekit_api_secret,
        settings.livekit_api_timeout_seconds,
    )
    closers.append(gateway.aclose)
    minter = TokenMinter(
        TokenPolicy(
            url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
            agent_name=settings.livekit_agent_name,
            default_ttl_seconds=settings.livekit_token_ttl_seconds,
            min_ttl_seconds=settings.livekit_token_ttl_min_seconds,
            max_ttl_seconds=settings.livekit_token_ttl_max_seconds,
            empty_timeout_seconds=settings.livekit_room_empty_timeout_seconds,
            max_participants=settings.livekit_room_max_participants,
        )
    )
    directory = AgentDirectory(mongo_client[settings.mongodb_database][COLLECTION])
    livekit_servicer = LiveKitServicer(LiveKitAccess(minter, gateway, conversations))
    agent_servicer = AgentServicer(directory, build_replies(settings, directory, closers))

    def register_livekit(server: grpc.aio.Server) -> None:
        livekit_service_pb2_grpc.add_LiveKitServiceServicer_to_server(livekit_servicer, server)

    def register_agents(server: grpc.aio.Server) -> None:
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(agent_servicer, server)

    try:
        base = await start_server(
            host=settings.host,
            port=settings.port,
            tokens=settings.token_policy(),
            registrars=[register_livekit, register_agents],
            service_names=SERVICE_NAMES,
        )
    except BaseException:
        await _close_all(closers)
        raise
    running = AgentServer(base.server, base.port, base.health, base.service_names, closers)
    try:
        await _prepare_store(directory)
    except BaseException:
        await running.server.stop(0)
        await running.close_clients()
        raise
    await running.set_serving(True)
    log.info("agent_svc ready", port=running.port, livekit_url=settings.livekit_url)
    return running


def _conversation_access(settings: AgentSettings, closers: list[Closer]) -> ConversationAccess:
    if not settings.chat_svc_address:
        # Settings allow this only in dev mode.
        log.warning(
            "DEV MODE: CHAT_SVC_ADDRESS is empty; conversation ownership is NOT checked for user calls",
        )
        return UncheckedConversationAccess()
    channel = open_channel(settings.chat_svc_address)

    async def close_channel() -> None:
        await channel.close(None)

    closers.append(close_channel)
    return ChatConversationAccess(channel, settings.chat_svc_timeout_seconds)


async def _prepare_store(directory: AgentDirectory) -> None:
    """Seeds the store, retrying while MongoDB is not reachable yet (health stays NOT_SERVING)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        try:
            await directory.prepare()
            return
        except PyMongoError as err:
            if time.monotonic() >= deadline:
                raise
            log.warning("mongodb not ready; retrying", error_type=type(err).__name__)
            await asyncio.sleep(1.0)


async def _close_all(closers: list[Closer]) -> None:
    while closers:
        await closers.pop()()


async def _run(settings: AgentSettings) -> None:
    running = await create_server(settings)
    await serve_until_signal(running, settings.shutdown_grace_seconds)


def main() -> None:
    """Entry point of `python -m agent_svc`: settings once, then serve until SIGTERM/SIGINT."""
    try:
        settings = AgentSettings()
    except ValidationError as err:
        messages = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in err.errors())
        sys.stderr.write(f"agent_svc: invalid configuration: {messages}\n")
        raise SystemExit(2) from None
    logs.configure(settings.log_level, settings.log_format, service="agent_svc")
    if settings.dev_mode:
        log.warning(DEV_MODE_WARNING)
    try:
        with telemetry.running("agent_svc", settings.host, settings.metrics_port, settings.otlp_endpoint):
            asyncio.run(_run(settings))
    except PyMongoError as err:
        log.error("mongodb unreachable at start-up", error_type=type(err).__name__)
        raise SystemExit(1) from None
