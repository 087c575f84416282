"""Outages mid-call: every turn ends up in chat_svc exactly once, in order.

- The worker as real processes: chat_svc is SIGKILLed mid-call, the worker process is SIGKILLed
  while its turns wait in the outbox, chat_svc comes back, and a new worker process (same outbox
  folder) delivers the leftovers before its own call.
- In process: a call that ends cleanly while chat_svc is down reports `delivered = False`, keeps
  its turns on disk after the bounded flush, and the next `simulate` sends them first.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from devrun.processes import ManagedProcess
from syntera.conversation.v1 import resources_pb2 as res
from tests.support.eventually import eventually
from tests.support.mesh import CHAT_SVC, Mesh, MeshFactory
from tests.voice.audio import SENTENCES, conversation_wav
from tests.voice.calls import clients, create_voice_conversation, list_messages, worker_settings
from tests.voice.worker_process import queued, start_simulate, worker_env
from voice_worker.call import DispatchInfo
from voice_worker.outbox import SUFFIX
from voice_worker.simulate import run_call_on_wav
from voice_worker.wav import write_wav

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(300)]


# How long a worker process may take for one simulated call (model load included) on a busy box.
CALL_TIMEOUT_SECONDS = 180.0


async def test_worker_process_killed_with_turns_in_its_outbox_and_chat_svc_crash(
    mesh_factory: MeshFactory, tmp_path: Path
) -> None:
    mesh = mesh_factory(with_envoy=False)
    conversation_id = await create_voice_conversation(mesh)
    outbox = tmp_path / "outbox"
    env = worker_env(mesh, outbox)
    first_wav, second_wav = tmp_path / "first.wav", tmp_path / "second.wav"
    # A long tail keeps the first call going after its second reply: the kill lands mid-call.
    write_wav(first_wav, conversation_wav(SENTENCES[:2], lead=5.0, gap=14.0, tail=20.0))
    write_wav(second_wav, conversation_wav(SENTENCES[2:], lead=5.0, gap=0.0))

    first = start_simulate(
        "worker-1",
        env,
        conversation_id=conversation_id,
        wav=first_wav,
        out=tmp_path / "first-reply.wav",
        log_path=tmp_path / "worker-1.log",
        cwd=tmp_path,
    )
    try:
        # chat_svc dies with the call under way, once it holds the first answered turn.
        await _until(first, lambda: _answered_turns(mesh, conversation_id), "the first answered turn")
        await asyncio.to_thread(mesh.kill, CHAT_SVC)
        # The second turn and its answer can only go to the outbox now; kill the worker there.
        await _until(first, lambda: _second_answer_queued(outbox), "the second answer in the outbox")
        left_behind = await asyncio.to_thread(queued, outbox)
    finally:
        await asyncio.to_thread(first.kill)
    assert first.popen is not None
    assert first.popen.returncode == -signal.SIGKILL
    assert await asyncio.to_thread(queued, outbox) == left_behind, "the outbox file survives SIGKILL"

    # chat_svc comes back on the same port and store; a new worker process adopts the outbox.
    await asyncio.to_thread(mesh.start, CHAT_SVC)
    second = start_simulate(
        "worker-2",
        env,
        conversation_id=conversation_id,
        wav=second_wav,
        out=tmp_path / "second-reply.wav",
        log_path=tmp_path / "worker-2.log",
        cwd=tmp_path,
    )
    try:
        assert second.popen is not None
        code = await asyncio.to_thread(second.popen.wait, CALL_TIMEOUT_SECONDS)
    finally:
        await asyncio.to_thread(second.stop)
    log = second.log_tail(400)
    assert code == 0, log
    assert "sending turns left by an earlier worker" in log
    assert "transcripts delivered" in log
    assert not list(outbox.glob(f"*{SUFFIX}")), "everything left behind was delivered"

    transcript = [
        m for m in await list_messages(mesh, conversation_id) if m.source == res.MESSAGE_SOURCE_TRANSCRIPT
    ]
    ids = [m.segment_id for m in transcript]
    assert len(ids) == len(set(ids)), f"a turn was stored twice: {ids}"
    assert all(m.final for m in transcript), "a turn was left interim"
    assert [m.seq for m in transcript] == sorted(m.seq for m in transcript)
    # Two calls, the killed one's turns (some delivered late) all before the second call's.
    calls = [m.segment_id.split(":", 1)[0] for m in transcript]
    first_call, second_call = calls[0], calls[-1]
    assert first_call != second_call
    assert calls == [first_call] * calls.count(first_call) + [second_call] * calls.count(second_call)
    # Each call: the greeting, then each user turn followed by the answer to it; nothing lost.
    for call, user_turns in ((first_call, 2), (second_call, 1)):
        roles = [m.role for m, c in zip(transcript, calls, strict=True) if c == call]
        assert roles == [res.ROLE_AGENT] + [res.ROLE_USER, res.ROLE_AGENT] * user_turns, (call, roles)
    users = [i for i, m in enumerate(transcript) if m.role == res.ROLE_USER]
    for index, keyword in zip(users, ("order", "evening", "technician"), strict=True):
        user, answer = transcript[index], transcript[index + 1]
        assert keyword in user.text.lower()
        # The offline responder answers the turn it was given: it echoes the user's last word.
        assert user.text.rstrip(".?!").split()[-1].lower() in answer.text.lower()
    # The turns the killed worker left behind are the ones delivered late, each exactly once.
    late = {q.segment.segment_id for q in left_behind}
    assert late <= set(ids)
    assert any(q.segment.role == "user" and q.segment.final for q in left_behind)


class WorkerExitedError(RuntimeError):
    """The worker process ended while a test still waited for something it should have done."""


async def _until(proc: ManagedProcess, check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls `check` while the worker process runs (its log tail in the failure)."""

    async def done() -> bool:
        if await check():
            return True
        if not proc.running():  # nothing more can happen: stop waiting
            raise WorkerExitedError(f"worker exited before {what}:\n{proc.log_tail(60)}")
        return False

    await eventually(
        done, within=CALL_TIMEOUT_SECONDS, interval=0.2, what=lambda: f"{what}:\n{proc.log_tail(60)}"
    )


async def _answered_turns(mesh: Mesh, conversation_id: str) -> bool:
    """chat_svc holds a final user turn and an agent turn after it."""
    roles = [
        (m.role, m.final)
        for m in await list_messages(mesh, conversation_id)
        if m.source == res.MESSAGE_SOURCE_TRANSCRIPT
    ]
    if (res.ROLE_USER, True) not in roles:
        return False
    return res.ROLE_AGENT in [role for role, _ in roles[roles.index((res.ROLE_USER, True)) :]]


async def _second_answer_queued(outbox: Path) -> bool:
    """The outbox holds the second user turn (final) and an agent turn recorded after it."""
    segments = [q.segment for q in await asyncio.to_thread(queued, outbox)]
    second_user = [
        i for i, s in enumerate(segments) if s.role == "user" and s.final and s.segment_id.endswith(":user:1")
    ]
    return bool(second_user) and any(s.role == "agent" for s in segments[second_user[0] :])


async def test_a_call_ending_while_chat_svc_is_down_keeps_its_turns_for_the_next_start(
    mesh_factory: MeshFactory, tmp_path: Path
) -> None:
    mesh = mesh_factory(with_envoy=False)
    conversation_id = await create_voice_conversation(mesh)
    outbox = tmp_path / "outbox"
    settings = worker_settings(mesh, outbox, VOICE_WORKER_FLUSH_TIMEOUT_SECONDS=2.0)
    dispatch = DispatchInfo(conversation_id, "default")

    # First worker: chat_svc dies after the first exchange (once it holds the answer, well before
    # the second sentence) and stays down past the end of the call.
    profiles, sink = clients(settings)

    async def crash_chat_svc() -> None:
        await eventually(
            lambda: _answered_turns(mesh, conversation_id),
            within=60.0,  # the call itself lasts about 30 s
            interval=0.2,
            what="the first answered turn",
        )
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
