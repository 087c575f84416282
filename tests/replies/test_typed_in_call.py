"""Typed messages in a real call reach the voice agent, which answers by voice and in the transcript.

The LiveKit server, the voice worker (offline providers, the scripted responder), agent_svc,
chat_svc and Envoy run as processes; a headless caller joins the room, hears the greeting, then
types through Envoy as the page does (`SendMessage`) and listens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from devrun.caller import Caller
from syntera.conversation.v1 import resources_pb2 as res
from tests.conftest import Store
from tests.replies.support import conversation
from tests.support.mesh import Mesh, start_test_mesh
from tests.voice.real_call import USER, final_turns, new_call, wait_for_messages

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(240)]

ANSWER_WITHIN_SECONDS = 15.0


@pytest.fixture(scope="module")
def call_mesh(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = start_test_mesh(store, tmp_path_factory.mktemp("typed-call"), with_worker=True)
    yield running
    running.close()


async def test_typed_messages_are_answered_by_voice_once_and_never_by_chat_svc(call_mesh: Mesh) -> None:
    join = await new_call(call_mesh)
    first = "Can you read what I type?"
    second = "Please stop and tell me the opening hours instead."
    async with (
        Caller() as caller,
        conversation(call_mesh, user=USER, conversation_id=join.conversation_id) as typing,
    ):
        await caller.join(join.url, join.token)
        await caller.wait_for_agent(within=30)
        await caller.wait_for_agent_speech(after=0, within=30)
        await caller.wait_until_agent_quiet(quiet_for=1.0)

        typed_at = time.monotonic()
        sent = await typing.send(first, request_id=uuid.uuid4().hex)
        answer = await caller.wait_for_agent_speech(after=typed_at, within=ANSWER_WITHIN_SECONDS)
        assert answer - typed_at < ANSWER_WITHIN_SECONDS
        # Typing while the agent speaks cuts it off, as talking over it does (the scripted answer
        # echoes the question and lasts several seconds; cut in after two).
        await asyncio.sleep(max(0.0, answer + 2.0 - time.monotonic()))
        second_at = time.monotonic()
        await typing.send(second)
        await caller.wait_for_agent_speech(after=second_at + 0.5, within=ANSWER_WITHIN_SECONDS)
        await caller.wait_until_agent_quiet(quiet_for=1.5)

    def answered_both(messages: list[res.Message]) -> bool:
        agents = [m for m in final_turns(messages, res.ROLE_AGENT) if m.seq > sent.seq]
        return len(agents) >= 2

    messages = await wait_for_messages(call_mesh, join.conversation_id, answered_both)
    typed = [m for m in messages if m.role == res.ROLE_USER and m.source == res.MESSAGE_SOURCE_TEXT]
    assert [m.text for m in typed] == [first, second]
    # Stored once each: the agent's chat context holds them, but they are not reported as spoken turns.
    spoken_users = final_turns(messages, res.ROLE_USER)
    assert not any(first in m.text or second in m.text for m in spoken_users)
    # chat_svc did not answer: no reply messages in a call's conversation.
    assert not any(m.HasField("reply") for m in messages)
    agent_turns = [m for m in final_turns(messages, res.ROLE_AGENT) if m.seq > sent.seq]
    cut, last = agent_turns[0], agent_turns[-1]
    assert cut.interrupted, [(m.seq, m.interrupted, m.text) for m in agent_turns]
    assert cut.text  # what was spoken before the second message came
    assert "scripted offline responder" not in cut.text
    # The scripted responder answers the newest typed message, by echoing it.
    assert "opening hours" in last.text
    assert not last.interrupted

    log = await asyncio.to_thread((call_mesh.log_dir / "voice_worker.log").read_text, errors="replace")
    assert "typed message to the agent" in log
    assert first not in log
    assert second not in log
