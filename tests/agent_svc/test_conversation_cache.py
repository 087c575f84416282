"""The conversation cache answers only what chat_svc said while the ends stream was live (unit)."""

from __future__ import annotations

import asyncio

import pytest

from agent_svc.conversation_cache import CachedConversationAccess
from agent_svc.model import CallMedia
from agent_svc.ownership import ConversationFacts
from servicekit.auth import Principal
from servicekit.errors import DomainError, permission_denied

pytestmark = pytest.mark.unit

ALICE = Principal("alice", is_service=False)
BOB = Principal("bob", is_service=False)
FACTS = ConversationFacts(agent_id="default", media=CallMedia.VOICE)


class Source:
    """chat_svc stand-in: alice owns every conversation; counts the questions; can be held."""

    def __init__(self) -> None:
        self.asked = 0
        self.ended: set[str] = set()
        self.gate: asyncio.Event | None = None

    async def resolve(
        self, principal: Principal, bearer_token: str, conversation_id: str
    ) -> ConversationFacts:
        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()
        if principal.subject != "alice":
            raise permission_denied("the conversation belongs to another user", "CONVERSATION_NOT_OWNED")
        return ConversationFacts("default", CallMedia.VOICE, ended=conversation_id in self.ended)


async def test_nothing_is_answered_from_memory_without_a_live_stream() -> None:
    source = Source()
    cache = CachedConversationAccess(source, max_entries=10)
    for _ in range(3):
        assert await cache.resolve(ALICE, "t", "c1") == FACTS
    assert source.asked == 3
    assert len(cache) == 0


async def test_a_live_stream_lets_the_owner_be_answered_from_memory() -> None:
    source = Source()
    cache = CachedConversationAccess(source, max_entries=10)
    cache.opened()
    for _ in range(3):
        assert await cache.resolve(ALICE, "t", "c1") == FACTS
    assert source.asked == 1


async def test_another_user_is_always_asked_about_and_refused() -> None:
    source = Source()
    cache = CachedConversationAccess(source, max_entries=10)
    cache.opened()
    await cache.resolve(ALICE, "t", "c1")
    for _ in range(2):
        with pytest.raises(DomainError):
            await cache.resolve(BOB, "t", "c1")
    assert source.asked == 3


async def test_an_end_is_never_answered_from_memory() -> None:
    source = Source()
    cache = CachedConversationAccess(source, max_entries=10)
    cache.opened()
    await cache.resolve(ALICE, "t", "c1")
    source.ended.add("c1")
    cache.ended("c1")
    facts = await cache.resolve(ALICE, "t", "c1")
    assert facts.ended
    assert source.asked == 2
    # An ended conversation is not cached either: every request asks.
    await cache.resolve(ALICE, "t", "c1")
    assert source.asked == 3


async def test_an_end_during_the_question_keeps_the_answer_out() -> None:
    source = Source()
    cache = CachedConversationAccess(source, max_entries=10)
    cache.opened()
    source.gate = asyncio.Event()
    asking = asyncio.create_task(cache.resolve(ALICE, "t", "c1"))
    await asyncio.sleep(0)
    cache.ended("c1")  # chat_svc answered "active" a moment before it ended
    source.gate.set()
    assert not (await asking).ended
    assert len(cache) == 0


@pytest.mark.parametrize("event", ["dropped", "reset", "reopened"])
async def test_a_stream_that_drops_or_resets_forgets_everything_and_answers_in_flight_stay_out(
    event: str,
) -> None:
    source = Source()
    cache = CachedConversationAccess(source, max_entries=10)
    cache.opened()
    await cache.resolve(ALICE, "t", "c1")
    source.gate = asyncio.Event()
    asking = asyncio.create_task(cache.resolve(ALICE, "t", "c2"))
    await asyncio.sleep(0)
    if event == "dropped":
        cache.dropped()
    elif event == "reset":
        cache.reset()
    else:
        cache.dropped()
        cache.opened()
    source.gate.set()
    await asking
    source.gate = None
    assert len(cache) == 0
    await cache.resolve(ALICE, "t", "c1")
    assert source.asked == 3


async def test_the_cache_is_bounded() -> None:
    source = Source()
    cache = CachedConversationAccess(source, max_entries=2)
    cache.opened()
    for conversation in ("c1", "c2", "c3"):
        await cache.resolve(ALICE, "t", conversation)
    assert len(cache) == 2
    await cache.resolve(ALICE, "t", "c1")  # the oldest was dropped
    assert source.asked == 4
