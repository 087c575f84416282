"""Typed messages in a call reach the voice agent, which answers by voice (and in the transcript).

The path: the user's `SendMessage` (the page, or any client of the API) stores the message in
chat_svc, as every typed message is stored; the worker follows the conversation's
`WatchConversation` as a service and hands each new typed user message to the agent session,
which stops speaking (as when the user talks over it) and answers.

Why the watch and not LiveKit's text streams from the page: one path for every typed message, so
it is stored once (idempotent on `request_id`), ordered with the spoken turns by `seq`, visible to
every watcher and to the API, sent by any client (not only one in the room), and not lost when
the worker restarts (the watch resumes from the last `seq` it saw). chat_svc does not answer typed
messages of VOICE or VIDEO conversations, so nothing is answered twice; the room's own text input
(`lk.chat`) is turned off, so nothing reaches the agent another way.

The typed message enters the agent's chat context as a user message whose id starts with
`TYPED_ITEM_PREFIX`; the transcript recorder skips such items (the message is stored already),
and reports the agent's spoken answer like any other agent turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import grpc
import structlog
from livekit.agents import AgentSession, llm

from servicekit.backoff import Backoff
from servicekit.client import ServiceCredentials, open_channel
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb2
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res

log = structlog.get_logger("voice_worker.typed")

TYPED_ITEM_PREFIX = "typed-"
# A watch is one long stream with a deadline: past it the follower resumes where it was.
WATCH_DEADLINE_SECONDS = 30 * 60
_BACKOFF_MIN_SECONDS = 0.5
_BACKOFF_MAX_SECONDS = 10.0
# Codes after which watching again cannot help (the conversation is gone, or not ours to read).
_FINAL = frozenset(
    {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT}
)

TypedHandler = Callable[[int, str], Awaitable[None]]


def is_typed(item_id: str) -> bool:
    """True for the chat-context item of a typed message (stored by SendMessage, not a spoken turn)."""
    return item_id.startswith(TYPED_ITEM_PREFIX)


async def answer_typed(session: AgentSession[None], seq: int, text: str) -> None:
    """The agent stops speaking, if it is, and answers the typed message by voice.

    The same as LiveKit's own handling of room text input, with the message's `seq` as its id.
    """
    with contextlib.suppress(RuntimeError):  # nothing to interrupt, or a speech that may not be
        await session.interrupt()
    message = llm.ChatMessage(id=f"{TYPED_ITEM_PREFIX}{seq}", role="user", content=[text])
    session.generate_reply(user_input=message)


class TypedMessageFollower:
    """Follows one conversation and calls `handler(seq, text)` once for each new typed user message.

    Messages already in the conversation when it starts are not answered (the agent joined after
    them); after a broken stream it resumes after the last `seq` seen, so none is missed or doubled.
    """

    def __init__(
        self,
        address: str,
        credentials: ServiceCredentials,
        conversation_id: str,
        handler: TypedHandler,
    ) -> None:
        self._channel = open_channel(address)
        self._stub = conv_grpc.ConversationServiceStub(self._channel)
        self._credentials = credentials
        self._conversation_id = conversation_id
        self._handler = handler
        self._task: asyncio.Task[None] | None = None
        self.answered = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="typed-messages")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close(None)

    async def _run(self) -> None:
        after_seq = 0
        live = False  # the first stream's replay is the past: skipped
        backoff = Backoff(_BACKOFF_MIN_SECONDS, _BACKOFF_MAX_SECONDS)
        while True:
            try:
                call = self._stub.WatchConversation(
                    conv_pb2.WatchConversationRequest(
                        conversation_id=self._conversation_id, after_seq=after_seq
                    ),
                    timeout=WATCH_DEADLINE_SECONDS,
                    metadata=self._credentials.metadata(time.monotonic()),
                )
                async for event in call:
                    backoff.reset()
                    if event.HasField("keep_alive"):
                        live = True
                    elif event.HasField("conversation_ended"):
                        return
                    elif event.HasField("message"):
                        message = event.message
                        if message.seq > after_seq:
                            after_seq = message.seq
                            if live and _typed_by_user(message):
                                await self._hand_over(message)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _FINAL:
                    log.warning(
                        "typed messages not followed",
                        conversation_id=self._conversation_id,
                        code=exc.code().name,
                    )
                    return
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    log.info("typed messages stream broke; resuming", code=exc.code().name)
                    await backoff.wait()

    async def _hand_over(self, message: conv_res.Message) -> None:
        self.answered += 1
        log.info("typed message to the agent", conversation_id=self._conversation_id, seq=message.seq)
        try:
            await self._handler(message.seq, message.text)
        except Exception:  # noqa: BLE001 - one message must not end the call's typed input
            log.exception(
                "typed message not handed over", conversation_id=self._conversation_id, seq=message.seq
            )


def _typed_by_user(message: conv_res.Message) -> bool:
    return (
        message.role == conv_res.ROLE_USER
        and message.source == conv_res.MESSAGE_SOURCE_TEXT
        and message.final
        and bool(message.text.strip())
    )
