"""A call never loses its agent: the worker is SIGKILLed mid-call and a new agent carries on.

LiveKit does not dispatch a job again when its worker dies (livekit/agents#1472). agent_svc sees
the agent leave a room whose user is still there and dispatches it again, marked `resume`; as
soon as the worker is back, a new agent joins, says it is back and goes on with the conversation
so far. The transcript keeps every turn once, in order.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from devrun.caller import Caller
from syntera.conversation.v1 import resources_pb2 as conv_res
from syntera.livekit.v1 import resources_pb2 as lk_res
from tests.calls.support import wait_for_conversation
from tests.support.mesh import VOICE_WORKER, MeshFactory
from tests.voice.audio import RATE, speak, word_error_rate
from tests.voice.real_call import final_turns, new_call, wait_for_messages
from voice_worker.history import RESUME_GREETING

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(360)]

FIRST = "I would like to check the status of my order."
SECOND = "Can you send a technician tomorrow morning?"
MAX_WORD_ERROR = 0.4
# The new agent is heard this soon after the restarted worker registered with LiveKit.
BACK_WITHIN_SECONDS = 10.0


async def _turn(caller: Caller, sentence: str) -> None:
    spoken_end = await caller.say(speak(sentence).samples, RATE)
    await caller.wait_for_agent_speech(after=spoken_end, within=15)
    await caller.wait_until_agent_quiet(quiet_for=1.0)


async def test_a_killed_worker_is_replaced_by_an_agent_that_carries_on(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory(with_worker=True)
    join = await new_call(mesh)
    async with Caller() as caller:
        await caller.join(join.url, join.token)
        first_agent = await caller.wait_for_agent(within=30)
        await caller.wait_for_agent_speech(after=0, within=30)
        await caller.wait_until_agent_quiet(quiet_for=1.0)
        await _turn(caller, FIRST)
        # Greeting, question and answer are stored before the crash (the outbox keeps any that
        # are not, for the next start; here the point is the agent, not the outbox).
        await wait_for_messages(
            mesh, join.conversation_id, lambda ms: len(final_turns(ms, conv_res.ROLE_AGENT)) >= 2, within=20
        )

        mesh.kill(VOICE_WORKER)
        await caller.wait_for_agent_to_leave(within=60)
        # Started on a thread: the caller keeps listening (in real time) while the worker loads.
        await asyncio.to_thread(mesh.start, VOICE_WORKER)
        registered = time.monotonic()
        back = await caller.wait_for_agent_speech(after=registered - 5, within=BACK_WITHIN_SECONDS + 5)
        assert back - registered <= BACK_WITHIN_SECONDS, (
            f"the new agent spoke {back - registered:.1f} s after"
        )
        assert caller.agent_identity not in (None, first_agent)
        await caller.wait_until_agent_quiet(quiet_for=1.0)
        await _turn(caller, SECOND)

    def complete(messages: list[conv_res.Message]) -> bool:
        return (
            len(final_turns(messages, conv_res.ROLE_AGENT)) >= 4
            and len(final_turns(messages, conv_res.ROLE_USER)) >= 2
        )

    messages = await wait_for_messages(mesh, join.conversation_id, complete, within=60)
    roles = [m.role for m in messages]
    agent, user = conv_res.ROLE_AGENT, conv_res.ROLE_USER
    # Greeting, question, answer; "I'm back", question, answer: in order, each once.
    assert roles == [agent, user, agent, agent, user, agent], [(m.seq, m.role, m.text) for m in messages]
    assert [m.seq for m in messages] == list(range(1, 7))
    assert all(m.final for m in messages)
    assert len({m.segment_id for m in messages}) == len(messages)
    assert messages[3].text == RESUME_GREETING
    assert RESUME_GREETING not in (messages[0].text, messages[2].text, messages[5].text)
    assert word_error_rate(FIRST, messages[1].text) <= MAX_WORD_ERROR, messages[1].text
    assert word_error_rate(SECOND, messages[4].text) <= MAX_WORD_ERROR, messages[4].text

    conversation = await wait_for_conversation(
        mesh, join.conversation_id, lambda c: c.call.agent_redispatches == 1, within=10
    )
    agents = [p for p in conversation.call.participants if p.kind == lk_res.PARTICIPANT_KIND_AGENT]
    assert len(agents) == 2
    assert agents[0].HasField("leave_time")
