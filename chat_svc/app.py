"""Wires chat_svc together: store, agent_svc client, change feeds, domain, servicer, grpc server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from chat_svc.call_records import CallRecords
from chat_svc.calls import CallSetup
from chat_svc.changefeed import ChangeFeed, Disruptions
from chat_svc.conversations import Conversations
from chat_svc.ends import ConversationEnds
from chat_svc.messages import MessageLog
from chat_svc.replies import AgentWriter, Replies, ReplySettings
from chat_svc.servicer import ConversationServicer
from chat_svc.settings import ChatSettings
from chat_svc.store import Collections, Document, ensure_indexes
from chat_svc.transcripts import Transcripts
from chat_svc.watch import CONVERSATIONS_FEED, MESSAGES_FEED, Watchers, conversation_keys, message_keys
from servicekit.server import RunningServer, start_server
from syntera.conversation.v1 import conversation_service_pb2, conversation_service_pb2_grpc

log = structlog.get_logger("chat_svc.app")

SERVICE_NAME = conversation_service_pb2.DESCRIPTOR.services_by_name["ConversationService"].full_name


@dataclass
class ChatServer(RunningServer):
    """The running server plus the change feeds its watch streams depend on."""

    feeds: tuple[ChangeFeed, ...] = ()
    replies: Replies | None = None

    async def stop(self, grace_seconds: float) -> None:
        """NOT_SERVING, end every watch stream cleanly, then drain unary calls and replies, and stop."""
        await self.set_serving(False)
        for feed in self.feeds:
            await feed.close()
        if self.replies is None:
            await self.server.stop(grace_seconds)
            return
        await asyncio.gather(self.server.stop(grace_seconds), self.replies.close(grace_seconds))


async def create_server(
    settings: ChatSettings,
    database: AsyncDatabase[Document],
    calls: CallSetup,
    disruptions: Disruptions | None = None,
    writer: AgentWriter | None = None,
) -> ChatServer:
    """Ensures indexes, starts the change feeds and the server (health NOT_SERVING until marked).

    Args:
        settings: chat_svc settings (host and port; port 0 picks a free one).
        database: The database holding `conversations` and `messages`.
        calls: agent_svc, or a stand-in in tests.
        disruptions: The connection-pool listener registered on the database's client, so feeds
            resync watchers after the driver reconnects; None when the client has none.
        writer: agent_svc's reply RPCs; None leaves typed messages unanswered (tests of other parts).
    """
    collections = Collections.of(database)
    await ensure_indexes(collections)
    disruptions = disruptions or Disruptions()
    messages_feed = ChangeFeed(
        MESSAGES_FEED, collections.messages, message_keys, settings.change_stream_poll_seconds, disruptions
    )
    conversations_feed = ChangeFeed(
        CONVERSATIONS_FEED,
        collections.conversations,
        conversation_keys,
        settings.change_stream_poll_seconds,
        disruptions,
    )
    conversations = Conversations(
        collections, calls, settings.conversations_page_size, settings.conversations_page_size_max
    )
    messages = MessageLog(
        collections, conversations, settings.messages_page_size, settings.messages_page_size_max
    )
    replies = Replies(collections, conversations, messages, writer, reply_settings(settings))
    await replies.ensure_indexes()
    messages.on_sent(replies.on_message)
    # This replica's own message writes reach its watchers at once; the change feed still brings
    # every write (this replica's again, de-duplicated by revision, and the other replicas').
    messages.on_written(messages_feed.publish)
    servicer = ConversationServicer(
        conversations,
        messages,
        Transcripts(collections, conversations, messages),
        CallRecords(collections, conversations, settings.call_end_ends_conversation),
        Watchers(
            collections,
            conversations,
            messages_feed,
            conversations_feed,
            settings.watch_keepalive_seconds,
            settings.mongodb_timeout_seconds,
            settings.watch_max_per_user,
        ),
        replies,
        ConversationEnds(
            conversations_feed, settings.watch_keepalive_seconds, settings.mongodb_timeout_seconds
        ),
    )
    running = await start_server(
        host=settings.host,
        port=settings.port,
        tokens=settings.token_policy(),
        registrars=[
            lambda server: conversation_service_pb2_grpc.add_ConversationServiceServicer_to_server(
                servicer, server
            )
        ],
        service_names=[SERVICE_NAME],
    )
    messages_feed.start()
    conversations_feed.start()
    replies.start(conversations_feed)
    return ChatServer(
        server=running.server,
        port=running.port,
        health=running.health,
        service_names=running.service_names,
        feeds=(messages_feed, conversations_feed),
        replies=replies,
    )


def reply_settings(settings: ChatSettings) -> ReplySettings:
    return ReplySettings(
        reply_timeout=settings.reply_timeout_seconds,
        update_interval=settings.reply_update_interval_seconds,
        history_max_messages=settings.reply_history_max_messages,
        history_max_chars=settings.reply_history_max_chars,
        summary_timeout=settings.summary_timeout_seconds,
        summary_delay=settings.summary_delay_seconds,
    )
