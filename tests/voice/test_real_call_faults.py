"""Real calls under faults: the worker SIGKILLed mid-call, the LiveKit server restarted mid-call.

Each test builds its own mesh (LiveKit server, services, Envoy, voice worker) because it kills or
restarts processes of it.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from livekit.protocol import models as lk_models

from devrun.caller import Caller, CallerError
from syntera.conversation.v1 import resources_pb2 as res
from tests.support.mesh import CHAT_SVC, LIVEKIT, VOICE_WORKER, Mesh, MeshFactory
from tests.voice.audio import RATE, speak, word_error_rate
from tests.voice.real_call import (
    agents_in_room,
    final_turns,
    new_call,
    participants,
    wait_for,
    wait_for_messages,
)

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(300)]

FIRST = "I would like to check the status of my order."
SECOND = "Can you send a technician tomorrow morning?"
MAX_WORD_ERROR = 0.4


async def _greeted(caller: Caller) -> float:
    await caller.wait_for_agent(within=30)
    await caller.wait_for_agent_speech(after=0, within=30)
    return await caller.wait_until_agent_quiet(quiet_for=1.0)


async def _turn(caller: Caller, sentence: str) -> None:
    spoken_end = await caller.say(speak(sentence).samples, RATE)
    await caller.wait_for_agent_speech(after=spoken_end, within=15)
    await caller.wait_until_agent_quiet(quiet_for=1.0)


async def test_turns_held_by_a_killed_worker_reach_chat_after_it_restarts(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory(with_worker=True)
    join = await new_call(mesh)
    # chat_svc is down for the whole call, so every turn waits in the worker's outbox.
    mesh.stop(CHAT_SVC)
    async with Caller() as caller:
        await caller.join(join.url, join.token)
        await _greeted(caller)
        await _turn(caller, FIRST)
        mesh.kill(VOICE_WORKER)
        await caller.wait_for_agent_to_leave(within=30)
    mesh.start(CHAT_SVC)
    mesh.start(VOICE_WORKER)

    def delivered(messages: list[res.Message]) -> bool:
        return bool(final_turns(messages, res.ROLE_USER)) and len(final_turns(messages, res.ROLE_AGENT)) >= 2

    # No new call comes: the restarted worker sends the dead one's turns on its own.
    messages = await wait_for_messages(mesh, join.conversation_id, delivered, within=60)
    (user,) = final_turns(messages, res.ROLE_USER)
    assert word_error_rate(FIRST, user.text) <= MAX_WORD_ERROR, user.text
    # Greeting and answer, each once: none doubled, nothing else invented.
    assert len(final_turns(messages, res.ROLE_AGENT)) == 2
    assert len(messages) == 3
    assert [m.seq for m in messages] == [1, 2, 3]


async def test_livekit_crash_mid_call_resumes_the_same_agent_session(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory(with_worker=True)
    join = await new_call(mesh)
    async with Caller() as caller:
        await caller.join(join.url, join.token)
        await _greeted(caller)
        await _turn(caller, FIRST)
        agent = caller.agent_identity
        # A crash loses every room without telling anyone. Both sides' LiveKit SDKs resume on the
        # server that comes back, with their tokens: the same agent session carries on.
        mesh.kill(LIVEKIT)
        mesh.start(LIVEKIT)
        await caller.wait_for_reconnected(within=30)
        await wait_for(
            lambda: _agent_publishing(mesh, join.room_name), "the agent back in the room", within=40
        )
        await _turn(caller, SECOND)
        assert caller.agent_identity == agent
        assert await agents_in_room(mesh, join.room_name) == [agent]

    messages = await wait_for_messages(mesh, join.conversation_id, _both_answered, within=60)
    _assert_both_turns_once(messages)
    # One greeting: the call went on, it did not start over with a second agent.
    assert len(final_turns(messages, res.ROLE_AGENT)) == 3


async def test_livekit_graceful_restart_mid_call_keeps_every_turn_and_brings_the_agent_back(
    mesh_factory: MeshFactory,
) -> None:
    mesh = mesh_factory(with_worker=True)
    join = await new_call(mesh)
    async with Caller() as caller:
        await caller.join(join.url, join.token)
        await _greeted(caller)
        await _turn(caller, FIRST)
        before_restart = time.monotonic()
        # A graceful stop tells every participant to leave: the agent's job ends and flushes its
        # turns; the caller's SDK resumes or the caller rejoins, as the page does, on the new server.
        mesh.stop(LIVEKIT)
        mesh.start(LIVEKIT)
        if not await caller.wait_for_drop(within=30):
            await caller.rejoin(join.url, join.token, within=30)
        await wait_for(lambda: _caller_in_room(mesh, join.room_name), "the caller back in the room")
        # The re-created room's own dispatch may find the worker still registering again (the server
        # then drops it); agent_svc dispatches the agent once more after its grace period.
        await wait_for(
            lambda: _agent_publishing(mesh, join.room_name), "the agent back in the room", within=90
        )
        # A new agent greets first ("I'm back"); an old one that reconnected says nothing. Either
        # way the caller speaks only once the agent is quiet, as a person would.
        with contextlib.suppress(CallerError):
            await caller.wait_for_agent_speech(after=before_restart, within=15)
        await caller.wait_until_agent_quiet(quiet_for=1.0)
        await _turn(caller, SECOND)
        assert len(await agents_in_room(mesh, join.room_name)) == 1

    messages = await wait_for_messages(mesh, join.conversation_id, _both_answered, within=60)
    _assert_both_turns_once(messages)
    # Greeting and both answers at least (a new agent adds its own greeting).
    assert len(final_turns(messages, res.ROLE_AGENT)) >= 3


async def _caller_in_room(mesh: Mesh, room_name: str) -> bool:
    return any(p.kind == lk_models.ParticipantInfo.Kind.STANDARD for p in await participants(mesh, room_name))


def _both_answered(messages: list[res.Message]) -> bool:
    users = final_turns(messages, res.ROLE_USER)
    return len(users) >= 2 and messages[-1].role == res.ROLE_AGENT and messages[-1].final


def _assert_both_turns_once(messages: list[res.Message]) -> None:
    users = final_turns(messages, res.ROLE_USER)
    assert len(users) == 2, [m.text for m in users]
    assert word_error_rate(FIRST, users[0].text) <= MAX_WORD_ERROR, users[0].text
    assert word_error_rate(SECOND, users[1].text) <= MAX_WORD_ERROR, users[1].text
    assert len({m.segment_id for m in messages}) == len(messages)
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))


async def _agent_publishing(mesh: Mesh, room_name: str) -> bool:
    """The agent is back in the room with its audio track published (the server's view)."""
    agents = [
        p for p in await participants(mesh, room_name) if p.kind == lk_models.ParticipantInfo.Kind.AGENT
    ]
    return len(agents) == 1 and bool(agents[0].tracks)
