"""`python -m chat_svc`: ConversationService on MongoDB."""

from __future__ import annotations

import asyncio
import signal

import structlog
from pymongo.errors import PyMongoError

from chat_svc.agent_client import AgentServiceClient
from chat_svc.app import create_server
from chat_svc.changefeed import Disruptions
from chat_svc.reply_client import AgentWriterClient
from chat_svc.settings import ChatSettings
from chat_svc.store import open_client
from servicekit import logs, telemetry
from servicekit.settings import DEV_MODE_WARNING

log = structlog.get_logger("chat_svc")

_STORE_RETRY_SECONDS = 1.0


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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Health turns SERVING only once the store answers and the indexes exist.
        while True:
            try:
                running = await create_server(settings, database, calls, disruptions, writer)
                break
            except PyMongoError as exc:
                log.warning("store not reachable yet; retrying", error_type=type(exc).__name__)
                try:
                    await asyncio.wait_for(stop.wait(), _STORE_RETRY_SECONDS)
                    return
                except TimeoutError:
                    continue
        await running.set_serving(True)
        log.info(
            "server ready",
            port=running.port,
            agent_svc=settings.agent_svc_address,
            database=settings.mongodb_database,
        )
        await stop.wait()
        log.info("server draining", grace_seconds=settings.shutdown_grace_seconds)
        await running.stop(settings.shutdown_grace_seconds)
        log.info("server stopped")
    finally:
        await writer.close()
        await calls.close()
        await client.close()


def main() -> None:
    settings = ChatSettings()
    logs.configure(settings.log_level, settings.log_format, service="chat_svc")
    if settings.dev_mode:
        log.warning(DEV_MODE_WARNING)
    with telemetry.running("chat_svc", settings.host, settings.metrics_port, settings.otlp_endpoint):
        asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
