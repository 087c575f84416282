"""`python -m chat_svc`: ConversationService on MongoDB."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable

import structlog
from pymongo.errors import PyMongoError

from chat_svc.agent_client import AgentServiceClient
from chat_svc.app import ChatServer, create_server
from chat_svc.changefeed import Disruptions
from chat_svc.reply_client import AgentWriterClient
from chat_svc.settings import ChatSettings
from chat_svc.store import open_client
from servicekit import logs, telemetry
from servicekit.backoff import Backoff
from servicekit.server import serve_until_signal
from servicekit.settings import DEV_MODE_WARNING, load_settings

log = structlog.get_logger("chat_svc")

# The (jittered) waits between tries while the store is not reachable at start-up.
STORE_RETRY_MIN_SECONDS = 0.25
STORE_RETRY_MAX_SECONDS = 2.0


async def _run(settings: ChatSettings) -> None:
    disruptions = Disruptions()
    client = open_client(settings.mongodb_uri, settings.mongodb_timeout_seconds, [disruptions])
    database = client[settings.mongodb_database]
    calls = AgentServiceClient.connect(
        settings.agent_svc_address,
        settings.service_jwt_secret.get_secret_value(),
        settings.agent_svc_timeout_seconds,
    )
    writer = AgentWriterClient.connect(
        settings.agent_svc_address,
        settings.service_jwt_secret.get_secret_value(),
        settings.reply_timeout_seconds,
        settings.summary_timeout_seconds,
    )

    async def start() -> ChatServer:
        return await create_server(settings, database, calls, disruptions, writer)

    try:
        running = await _start_when_store_answers(start)
        if running is None:
            return
        log.info(
            "chat_svc ready",
            port=running.port,
            agent_svc=settings.agent_svc_address,
            database=settings.mongodb_database,
        )
        # What exists now (modules, clients, the server) lives as long as the process: keep it out
        # of the collector's full passes, which otherwise walk all of it in the middle of calls.
        gc.freeze()
        await serve_until_signal(running, settings.shutdown_grace_seconds)
    finally:
        await writer.close()
        await calls.close()
        await client.close()


async def _start_when_store_answers(start: Callable[[], Awaitable[ChatServer]]) -> ChatServer | None:
    """Starts the server once the store answers (it ensures the indexes first); None if stopped first.

    chat_svc waits for the store as long as it takes (agent_svc gives up after a while): a signal
    ends the wait. Once the server runs, `serve_until_signal` handles the signals.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    backoff = Backoff(STORE_RETRY_MIN_SECONDS, STORE_RETRY_MAX_SECONDS)
    while not stop.is_set():
        try:
            running = await start()
        except PyMongoError as exc:
            log.warning("store not reachable yet; retrying", error_type=type(exc).__name__)
            await backoff.wait(stop)
            continue
        if stop.is_set():  # a signal came while it started, before serve_until_signal took over
            await running.stop(0)
            return None
        return running
    return None


def main() -> None:
    settings = load_settings(ChatSettings, "chat_svc")
    logs.configure(settings.log_level, settings.log_format, service="chat_svc")
    if settings.dev_mode:
        log.warning(DEV_MODE_WARNING)
    with telemetry.running("chat_svc", settings.host, settings.metrics_port, settings.otlp_endpoint):
        asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
