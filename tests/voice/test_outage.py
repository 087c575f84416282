"""chat_svc killed mid-call, the worker restarted with turns in its outbox: each turn stored once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from syntera.conversation.v1 import resources_pb2 as res
from tests.support.mesh import CHAT_SVC, MeshFactory
from tests.voice.audio import SENTENCES, conversation_wav
from tests.voice.calls import clients, create_voice_conversation, list_messages, worker_settings
from voice_worker.call import DispatchInfo
from voice_worker.outbox import SUFFIX
from voice_worker.simulate import run_call_on_wav

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(300)]


async def test_turns_survive_a_chat_svc_crash_and_a_worker_restart(
    mesh_factory: MeshFactory, tmp_path: Path
) -> None:
    mesh = mesh_factory(with_envoy=False)
    conversation_id = await create_voice_conversation(mesh)
    outbox = tmp_path / "outbox"
    settings = worker_settings(mesh, outbox, VOICE_WORKER_FLUSH_TIMEOUT_SECONDS=2.0)
    dispatch = DispatchInfo(conversation_id, "default")

    # First worker: chat_svc dies after the first exchange and stays down past the end of the call.
    profiles, sink = clients(settings)

    async def crash_chat_svc() -> None:
        await asyncio.sleep(14.0)
        await asyncio.to_thread(mesh.kill, CHAT_SVC)

    crash = asyncio.create_task(crash_chat_svc())
    try:
        first = await run_call_on_wav(
            settings,
            dispatch=dispatch,
            wav=conversation_wav(SENTENCES[:2], lead=5.0, gap=14.0),
            profiles=profiles,
            sink=sink,
        )
    finally:
        await crash
        await profiles.aclose()
        await sink.aclose()
    assert not first.delivered
    assert list(outbox.glob(f"*{SUFFIX}")), "undelivered turns must stay in the outbox file"

    # chat_svc comes back; the restarted worker sends the leftovers before its own call.
    await asyncio.to_thread(mesh.start, CHAT_SVC)
    from voice_worker.simulate import simulate  # the command's own path: leftovers first
    from voice_worker.wav import write_wav

    wav_path = tmp_path / "second.wav"
    write_wav(wav_path, conversation_wav(SENTENCES[2:], lead=5.0, gap=0.0))
    profiles, sink = clients(settings)
    try:
        second = await simulate(
            settings,
            conversation_id=conversation_id,
            agent_id="default",
            wav_path=wav_path,
            out_path=tmp_path / "reply.wav",
            profiles=profiles,
            sink=sink,
        )
    finally:
        await profiles.aclose()
        await sink.aclose()
    assert second.delivered
    assert not list(outbox.glob(f"*{SUFFIX}"))

    transcript = [
        m for m in await list_messages(mesh, conversation_id) if m.source == res.MESSAGE_SOURCE_TRANSCRIPT
    ]
    ids = [m.segment_id for m in transcript]
    assert len(ids) == len(set(ids)), "a turn was stored twice"
    expected = first.user_turns + first.agent_turns + second.user_turns + second.agent_turns
    assert len(transcript) == expected, "a turn was lost"
    assert all(m.final for m in transcript)
    # In order: the first call's turns, then the second's; within each, user before the reply to it.
    calls = [m.segment_id.split(":", 1)[0] for m in transcript]
    assert calls == sorted(calls, key=lambda c: c != first.call_id)
    users = [m.text.lower() for m in transcript if m.role == res.ROLE_USER]
    assert len(users) == 3
    assert "order" in users[0]
    assert "evening" in users[1]
    assert "technician" in users[2]
