"""Real calls: the LiveKit server, the voice worker and a headless caller, end to end.

The caller gets its token through Envoy's REST path as the page does, joins the room, waits for the
greeting as a person does (LiveKit Agents ignores the user for the first seconds of the agent's
first speech), speaks espeak-ng sentences and listens to the agent. Providers are offline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devrun.caller import Caller
from syntera.conversation.v1 import resources_pb2 as res
from tests.conftest import Store
from tests.support.mesh import Mesh, start_test_mesh
from tests.voice.audio import RATE, speak, word_error_rate
from tests.voice.real_call import final_turns, new_call, wait_for_messages

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(240)]

SENTENCES = (
    "I would like to check the status of my order.",
    "Can you send a technician tomorrow morning?",
)
# Whisper tiny.en on espeak-ng speech: about 11 % word error over many sentences (bench voice_wer);
# one sentence may be worse, none should be unrecognisable.
MAX_WORD_ERROR = 0.4
# The offline pipeline answers within about a second of the end of speech; a turn has this long.
ANSWER_WITHIN_SECONDS = 10.0


@pytest.fixture(scope="module")
def call_mesh(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """LiveKit server, agent_svc, chat_svc, Envoy and the voice worker, shared by this module's calls."""
    running = start_test_mesh(store, tmp_path_factory.mktemp("call-mesh"), with_worker=True)
    yield running
    running.close()


async def test_a_call_dispatched_by_its_token_greets_answers_and_is_stored(call_mesh: Mesh) -> None:
    join = await new_call(call_mesh)
    async with Caller() as caller:
        await caller.join(join.url, join.token)
        # Nobody dispatched anything but the token's room configuration.
        agent = await caller.wait_for_agent(within=30)
        assert agent
        greeting_start = await caller.wait_for_agent_speech(after=0, within=30)
        greeting_end = await caller.wait_until_agent_quiet(quiet_for=1.0)
        assert caller.heard.audible_seconds(greeting_start, greeting_end) > 0.5
        for sentence in SENTENCES:
            speech = speak(sentence)
            spoken_end = await caller.say(speech.samples, RATE)
            answer = await caller.wait_for_agent_speech(after=spoken_end, within=ANSWER_WITHIN_SECONDS)
            answer_end = await caller.wait_until_agent_quiet(quiet_for=1.0)
            assert caller.heard.audible_seconds(answer, answer_end) > 0.3, "the answer was not audible"

    def complete(messages: list[res.Message]) -> bool:
        return (
            len(final_turns(messages, res.ROLE_USER)) >= len(SENTENCES)
            and len(final_turns(messages, res.ROLE_AGENT)) >= len(SENTENCES) + 1
        )

    messages = await wait_for_messages(call_mesh, join.conversation_id, complete)
    users = final_turns(messages, res.ROLE_USER)
    # Each user turn stored once: one message per sentence, in order, recognisably what was said.
    assert len(users) == len(SENTENCES), [m.text for m in users]
    for sentence, message in zip(SENTENCES, users, strict=True):
        assert word_error_rate(sentence, message.text) <= MAX_WORD_ERROR, (sentence, message.text)
    agents = final_turns(messages, res.ROLE_AGENT)
    assert all(m.text for m in agents)
    assert len({m.segment_id for m in messages}) == len(messages)
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))


def test_worker_log_has_no_transcript_text(call_mesh: Mesh) -> None:
    log = Path(call_mesh.log_dir / "voice_worker.log").read_text(errors="replace")
    assert "registered worker" in log
    for sentence in SENTENCES:
        assert sentence.lower().rstrip(".?") not in log.lower()
