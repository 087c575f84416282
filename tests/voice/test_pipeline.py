"""The offline pipeline end to end: real STT, responder, TTS, and a real chat_svc."""

from __future__ import annotations

from pathlib import Path

import pytest

from syntera.conversation.v1 import resources_pb2 as res
from tests.support.mesh import MeshFactory
from tests.voice.audio import SENTENCES, conversation_wav, word_error_rate
from tests.voice.calls import (
    clients,
    create_voice_conversation,
    get_conversation,
    list_messages,
    worker_settings,
)
from voice_worker.call import DispatchInfo
from voice_worker.simulate import run_call_on_wav
from voice_worker.wav import read_wav, rms_dbfs

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(300)]


async def test_three_sentences_become_user_and_agent_turns_in_order(
    mesh_factory: MeshFactory, tmp_path: Path
) -> None:
    mesh = mesh_factory(with_envoy=False)
    conversation_id = await create_voice_conversation(mesh)
    settings = worker_settings(mesh, tmp_path / "outbox")
    profiles, sink = clients(settings)
    # Gaps longer than the agent's replies: no interruptions in this test.
    wav = conversation_wav(SENTENCES, lead=6.0, gap=14.0, tail=1.0)
    try:
        result = await run_call_on_wav(
            settings,
            dispatch=DispatchInfo(conversation_id, "default"),
            wav=wav,
            profiles=profiles,
            sink=sink,
            out_path=tmp_path / "reply.wav",
        )
    finally:
        await profiles.aclose()
        await sink.aclose()

    assert result.delivered
    messages = await list_messages(mesh, conversation_id)
    transcript = [m for m in messages if m.source == res.MESSAGE_SOURCE_TRANSCRIPT]
    users = [m for m in transcript if m.role == res.ROLE_USER]
    agents = [m for m in transcript if m.role == res.ROLE_AGENT]
    assert len(users) == 3
    assert all(m.final for m in transcript)
    assert not any(m.interrupted for m in agents)
    # After the greeting (if the profile has one) turns alternate: user, agent, user, agent, ...
    roles = [m.role for m in transcript]
    first_user = roles.index(res.ROLE_USER)
    assert roles[first_user:] == [res.ROLE_USER, res.ROLE_AGENT] * 3
    assert [m.seq for m in transcript] == sorted(m.seq for m in transcript)
    wer = word_error_rate(" ".join(SENTENCES), " ".join(m.text for m in users))
    assert wer < 0.20, f"word error {wer:.0%}"
    # Each reply answers the turn before it, and carries the turn's latency figures.
    for user, agent in zip(users, transcript[first_user + 1 :: 2], strict=True):
        assert user.text.rstrip(".?!").split()[-1].lower() in agent.text.lower()
        assert agent.metrics.HasField("tts_time_to_first_byte")
    assert all(u.metrics.HasField("end_of_turn_delay") for u in users)
    reply = read_wav(tmp_path / "reply.wav")
    assert reply.duration >= wav.duration
    assert rms_dbfs(reply.samples) > -40.0
    assert result.agent_audio is not None
    assert rms_dbfs(result.agent_audio.samples) > -30.0
    # The conversation says the call ran on offline providers, and which.
    metadata = (await get_conversation(mesh, conversation_id)).metadata
    assert metadata["providers"] == "offline"
    assert metadata["stt_model"]
    assert metadata["tts_model"]


async def test_interrupted_agent_turn_is_stored_with_what_was_spoken(
    mesh_factory: MeshFactory, tmp_path: Path
) -> None:
    mesh = mesh_factory(with_envoy=False)
    conversation_id = await create_voice_conversation(mesh)
    settings = worker_settings(mesh, tmp_path / "outbox")
    profiles, sink = clients(settings)
    # The second sentence starts while the agent is still answering the first.
    wav = conversation_wav(SENTENCES[:2], lead=6.0, gap=4.0, tail=1.0)
    try:
        result = await run_call_on_wav(
            settings,
            dispatch=DispatchInfo(conversation_id, "default"),
            wav=wav,
            profiles=profiles,
            sink=sink,
        )
    finally:
        await profiles.aclose()
        await sink.aclose()

    assert result.interrupted_turns >= 1
    transcript = [
        m for m in await list_messages(mesh, conversation_id) if m.source == res.MESSAGE_SOURCE_TRANSCRIPT
    ]
    cut = [m for m in transcript if m.role == res.ROLE_AGENT and m.interrupted]
    assert len(cut) == 1
    spoken = cut[0].text
    # The responder's full reply ends with this sentence; an interrupted turn holds only what was heard.
    assert spoken.startswith("I heard you say")
    assert not spoken.rstrip(".").endswith("your words are saved")
    index = transcript.index(cut[0])
    assert transcript[index - 1].role == res.ROLE_USER
    assert transcript[index + 1].role == res.ROLE_USER  # the user who spoke over the agent
    assert transcript[index + 1].final
