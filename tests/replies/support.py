"""Helpers for the agent-reply tests: a user's conversation through Envoy, as the page sees it.

Every call goes through Envoy on native gRPC (the page uses gRPC-web to the same listener; the REST
paths are exercised where a test says so), with the user's own token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import httpx

from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as res
from tests.support.eventually import eventually
from tests.support.identity import bearer, user_token
from tests.support.mesh import Mesh

USER = "rita"
TIMEOUT = 10.0


@dataclass
class Seen:
    """Every revision of every message a watch delivered, by seq, in arrival order."""

    revisions: dict[int, list[res.Message]] = field(default_factory=dict)

    def add(self, message: res.Message) -> None:
        copy = res.Message()
        copy.CopyFrom(message)
        self.revisions.setdefault(message.seq, []).append(copy)

    def latest(self, seq: int) -> res.Message | None:
        found = self.revisions.get(seq)
        return found[-1] if found else None

    def replies(self) -> list[res.Message]:
        return [r[-1] for _, r in sorted(self.revisions.items()) if r[-1].HasField("reply")]


class Conversation:
    """One conversation of `user`, with a watch running in the background from its creation."""

    def __init__(self, mesh: Mesh, channel: grpc.aio.Channel, conversation_id: str, user: str) -> None:
        self.mesh = mesh
        self.stub = api_grpc.ConversationServiceStub(channel)
        self.conversation_id = conversation_id
        self.user = user
        self.seen = Seen()
        self.changed = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(user_token(self.user))

    def start_watch(self) -> None:
        self._watch = asyncio.create_task(self._follow())

    async def stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    async def _follow(self) -> None:
        call = self.stub.WatchConversation(
            api.WatchConversationRequest(conversation_id=self.conversation_id), metadata=self.metadata
        )
        async for event in call:
            if event.HasField("message"):
                self.seen.add(event.message)
                self.changed.set()

    async def send(self, text: str, request_id: str = "") -> res.Message:
        response = await self.stub.SendMessage(
            api.SendMessageRequest(conversation_id=self.conversation_id, text=text, request_id=request_id),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return response.message

    async def retry(self, message_id: str) -> res.Message:
        response = await self.stub.RetryReply(
            api.RetryReplyRequest(conversation_id=self.conversation_id, message_id=message_id),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return response.message

    async def messages(self) -> list[res.Message]:
        response = await self.stub.ListMessages(
            api.ListMessagesRequest(conversation_id=self.conversation_id, page_size=500),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return list(response.messages)

    async def get(self) -> res.Conversation:
        response = await self.stub.GetConversation(
            api.GetConversationRequest(conversation_id=self.conversation_id),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return response.conversation

    async def end(self) -> res.Conversation:
        response = await self.stub.EndConversation(
            api.EndConversationRequest(conversation_id=self.conversation_id),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return response.conversation

    async def wait_reply(
        self, in_reply_to: int, done: Callable[[res.Message], bool], within: float = 20.0
    ) -> res.Message:
        """The reply to the user message `in_reply_to` once `done(reply)` holds, as the watch saw it."""
        deadline = time.monotonic() + within
        while True:
            for reply in self.seen.replies():
                if reply.reply.in_reply_to_seq == in_reply_to and done(reply):
                    return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [
                    (m.seq, res.ReplyState.Name(m.reply.state), m.reply.failure_reason, len(m.text))
                    for m in self.seen.replies()
                ]
                raise AssertionError(f"no such reply to seq {in_reply_to} within {within:.0f} s; seen {seen}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                continue


def ended(reply: res.Message) -> bool:
    return reply.final and reply.reply.state != res.REPLY_STATE_GENERATING


@asynccontextmanager
async def conversation(
    mesh: Mesh,
    channel: res.Channel.ValueType = res.CHANNEL_TEXT,
    user: str = USER,
    *,
    conversation_id: str = "",
) -> AsyncIterator[Conversation]:
    """A new conversation through Envoy (or the existing `conversation_id`), watched from its start."""
    assert mesh.envoy_addr is not None
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as grpc_channel:
        if not conversation_id:
            created = await api_grpc.ConversationServiceStub(grpc_channel).CreateConversation(
                api.CreateConversationRequest(agent_id="default", channel=channel),
                metadata=bearer(user_token(user)),
                timeout=TIMEOUT,
            )
            conversation_id = created.conversation.conversation_id
        opened = Conversation(mesh, grpc_channel, conversation_id, user)
        opened.start_watch()
        try:
            yield opened
        finally:
            await opened.stop_watch()


async def standin_stats(port: int) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"http://127.0.0.1:{port}/stats")
    response.raise_for_status()
    stats: dict[str, object] = response.json()
    return stats


async def wait_until(probe: Callable[[], object], what: str, within: float = 15.0) -> None:
    await eventually(probe, within=within, interval=0.1, what=what)
