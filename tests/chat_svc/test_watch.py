"""WatchConversation / WatchConversations: replay then live, no gap, no duplicate, keep-alives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as pb
from tests.chat_svc.calls import TIMEOUT, as_user, create, report, segment
from tests.chat_svc.support import ChatInProcess, chat_in_process
from tests.conftest import Store
from tests.support.eventually import eventually

pytestmark = pytest.mark.grpc


class StreamEndedError(RuntimeError):
    """The watch stream closed while a test still waited for events on it."""


class Watcher:
    """Collects a watch stream's events in the background."""

    def __init__(
        self, stub: api_grpc.ConversationServiceStub, conversation_id: str, after_seq: int = 0
    ) -> None:
        self.call = stub.WatchConversation(
            api.WatchConversationRequest(conversation_id=conversation_id, after_seq=after_seq),
            metadata=as_user("alice"),
        )
        self.messages: list[pb.Message] = []
        self.keep_alives = 0
        self.ended: api.ConversationEnded | None = None
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.call:
            kind = event.WhichOneof("event")
            if kind == "message":
                self.messages.append(event.message)
            elif kind == "keep_alive":
                self.keep_alives += 1
            elif kind == "conversation_ended":
                self.ended = event.conversation_ended

    async def wait_for(self, predicate: Callable[[], bool], limit_seconds: float = TIMEOUT) -> None:
        def holds() -> bool:
            if predicate():
                return True
            if self.task.done():  # nothing more can arrive: stop waiting
                self.task.result()
                raise StreamEndedError("the stream ended early")
            return False

        await eventually(holds, within=limit_seconds, interval=0.02, what="the watch stream's events")

    def finals(self) -> list[tuple[int, str]]:
        return [(m.seq, m.text) for m in self.messages if m.final]

    def cancel(self) -> None:
        self.call.cancel()


@pytest.fixture
async def watchers() -> AsyncIterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.cancel()
        await asyncio.gather(watcher.task, return_exceptions=True)


async def test_replay_then_live_without_duplicates(chat: ChatInProcess, watchers: list[Watcher]) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    await report(chat.stub, conversation_id, segment("a", "first"), segment("b", "sec", final=False))
    watcher = Watcher(chat.stub, conversation_id)
    watchers.append(watcher)
    await watcher.wait_for(lambda: len(watcher.messages) >= 2)
    await report(chat.stub, conversation_id, segment("b", "second"), segment("c", "third"))
    await watcher.wait_for(lambda: len(watcher.finals()) == 3)
    assert watcher.finals() == [(1, "first"), (2, "second"), (3, "third")]
    assert [(m.seq, m.revision) for m in watcher.messages] == [(1, 1), (2, 1), (2, 2), (3, 1)]


async def test_keep_alive_and_end(chat: ChatInProcess, watchers: list[Watcher]) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    watcher = Watcher(chat.stub, conversation_id)
    watchers.append(watcher)
    await watcher.wait_for(lambda: watcher.keep_alives >= 1)
    await chat.stub.EndConversation(
        api.EndConversationRequest(conversation_id=conversation_id),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    await asyncio.wait_for(watcher.task, TIMEOUT)
    assert watcher.ended is not None
    assert watcher.ended.conversation.status == pb.CONVERSATION_STATUS_ENDED


async def test_resume_gets_every_missed_event_exactly_once(
    chat: ChatInProcess, watchers: list[Watcher]
) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    first = Watcher(chat.stub, conversation_id)
    watchers.append(first)
    await report(chat.stub, conversation_id, segment("s1", "one"), segment("s2", "tw", final=False))
    await first.wait_for(lambda: len(first.messages) == 2)
    first.cancel()
    await asyncio.gather(first.task, return_exceptions=True)
    # The resume rule: the highest seq up to which the client holds only final messages.
    resume_at = min((m.seq for m in first.messages if not m.final), default=3) - 1
    assert resume_at == 1
    # Missed while away: s2 finalised (seq 2, interim when the client left) and two new turns.
    await report(
        chat.stub, conversation_id, segment("s2", "two"), segment("s3", "three"), segment("s4", "four")
    )
    resumed = Watcher(chat.stub, conversation_id, after_seq=resume_at)
    watchers.append(resumed)
    await resumed.wait_for(lambda: len(resumed.messages) >= 3)
    await asyncio.sleep(0.3)  # anything doubled would arrive meanwhile
    assert [(m.seq, m.text) for m in resumed.messages] == [(2, "two"), (3, "three"), (4, "four")]


async def test_two_replicas_watcher_on_a_sees_reports_to_b(
    chat: ChatInProcess, store: Store, database_name: str, agent_port: int, watchers: list[Watcher]
) -> None:
    async with chat_in_process(store.uri, database_name, f"127.0.0.1:{agent_port}") as other:
        conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
        watcher = Watcher(chat.stub, conversation_id)
        watchers.append(watcher)
        await watcher.wait_for(lambda: watcher.keep_alives >= 1)
        for n in range(20):
            await report(other.stub, conversation_id, segment(f"s{n}", f"turn {n}"))
        await watcher.wait_for(lambda: len(watcher.finals()) == 20)
        assert watcher.finals() == [(n + 1, f"turn {n}") for n in range(20)]


async def test_watch_conversations_streams_created_and_ended(chat: ChatInProcess) -> None:
    call = chat.stub.WatchConversations(api.WatchConversationsRequest(), metadata=as_user("alice"))
    events: list[tuple[str, str]] = []

    async def collect() -> None:
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "conversation_created":
                events.append((kind, event.conversation_created.conversation_id))
            elif kind == "conversation_ended":
                events.append((kind, event.conversation_ended.conversation_id))
            elif kind == "keep_alive" and not events:
                events.append((kind, ""))

    task = asyncio.create_task(collect())
    try:
        # The first keep-alive proves the stream is subscribed.
        await eventually(lambda: events, within=TIMEOUT, interval=0.02, what="the first keep-alive")
        conversation_id = (await create(chat.stub, "alice")).conversation.conversation_id
        await create(chat.stub, "bob")  # someone else's: never shown to alice
        await chat.stub.EndConversation(
            api.EndConversationRequest(conversation_id=conversation_id),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
        await eventually(
            lambda: len(events) >= 3, within=TIMEOUT, interval=0.02, what=lambda: f"3 events: {events}"
        )
        assert events == [
            ("keep_alive", ""),
            ("conversation_created", conversation_id),
            ("conversation_ended", conversation_id),
        ]
    finally:
        call.cancel()
        await asyncio.gather(task, return_exceptions=True)
