"""The agent answers typed messages: real processes, a local OpenAI-compatible stand-in as the model.

The mesh (store, LiveKit, agent_svc, chat_svc, Envoy) runs with LLM_BASE_URL pointing at
`devrun.llm_standin` in its own process; directives in the user's text make the stand-in slow,
stall, fail or drop its stream. Everything the user does goes through Envoy.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest

from devrun.llm_standin import MODEL, standin_env, start_standin
from devrun.ports import free_port
from syntera.agent.v1 import agent_service_pb2 as agent_api
from syntera.agent.v1 import agent_service_pb2_grpc as agent_grpc
from syntera.agent.v1 import resources_pb2 as agent_res
from syntera.conversation.v1 import conversation_service_pb2 as conv_api
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as res
from tests.conftest import Store
from tests.replies.support import Conversation, conversation, ended, standin_stats, wait_until
from tests.support.identity import bearer, service_token, user_token
from tests.support.mesh import Mesh, MeshFactory, start_test_mesh

pytestmark = [pytest.mark.mesh, pytest.mark.timeout(180)]

STALL_SECONDS = 2
REPLY_TIMEOUT_SECONDS = 8
HISTORY_MESSAGES = 6
HISTORY_CHARS = 400


@pytest.fixture(scope="module")
def standin_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    proc = start_standin(port, tmp_path_factory.mktemp("standin") / "llm_standin.log")
    yield port
    proc.stop()


@pytest.fixture(scope="module")
def llm_mesh(store: Store, standin_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = start_test_mesh(
        store,
        tmp_path_factory.mktemp("llm-mesh"),
        extra_env={
            **standin_env(standin_port),
            "LLM_STALL_TIMEOUT_SECONDS": str(STALL_SECONDS),
            "REPLY_TIMEOUT_SECONDS": str(REPLY_TIMEOUT_SECONDS),
            "REPLY_UPDATE_INTERVAL_SECONDS": "0.05",
            "REPLY_HISTORY_MAX_MESSAGES": str(HISTORY_MESSAGES),
            "REPLY_HISTORY_MAX_CHARS": str(HISTORY_CHARS),
            "SUMMARY_DELAY_SECONDS": "0.2",
        },
    )
    yield running
    running.close()


def _growing(revisions: list[res.Message]) -> list[str]:
    return [m.text for m in revisions if m.reply.state == res.REPLY_STATE_GENERATING]


async def test_a_reply_grows_becomes_final_and_is_stored_once(llm_mesh: Mesh, standin_port: int) -> None:
    async with conversation(llm_mesh) as chat:
        request_id = uuid.uuid4().hex
        sent = await chat.send("[words=40][pace=30] What plans do you offer?", request_id)
        assert (sent.seq, sent.role, sent.final) == (1, res.ROLE_USER, True)
        reply = await chat.wait_reply(1, ended)
        assert reply.reply.state == res.REPLY_STATE_COMPLETE, reply.reply.failure_reason
        assert (reply.seq, reply.role, reply.source, reply.final) == (
            2,
            res.ROLE_AGENT,
            res.MESSAGE_SOURCE_TEXT,
            True,
        )
        assert reply.text.startswith("Stand-in reply")
        assert len(reply.text.split()) == 40
        assert reply.reply.generator.kind == agent_res.GENERATOR_KIND_OPENAI_COMPATIBLE_MODEL
        assert reply.reply.generator.model == MODEL
        assert reply.reply.attempt == 1

        # Watchers saw it grow: several revisions, each the one before plus more, then final.
        revisions = chat.seen.revisions[2]
        growing = _growing(revisions)
        assert len(growing) >= 3, [len(t) for t in growing]
        for before, after in zip(growing, growing[1:], strict=False):
            assert after.startswith(before)
            assert len(after) >= len(before)
        assert [m.revision for m in revisions] == sorted({m.revision for m in revisions})
        assert not any(m.final for m in revisions[:-1])

        # Sending the same message again (a client retry) stores nothing new and starts no reply.
        requests_before = (await standin_stats(standin_port))["requests"]
        again = await chat.send("[words=40][pace=30] What plans do you offer?", request_id)
        assert again.message_id == sent.message_id
        await asyncio.sleep(1.0)
        stored = await chat.messages()
        assert [(m.seq, m.role) for m in stored] == [(1, res.ROLE_USER), (2, res.ROLE_AGENT)]
        assert stored[1].text == reply.text
        assert (await standin_stats(standin_port))["requests"] == requests_before


async def test_a_newer_message_cancels_the_reply_in_flight(llm_mesh: Mesh, standin_port: int) -> None:
    async with conversation(llm_mesh) as chat:
        first = await chat.send("[words=300][pace=40] Tell me everything about my bill.")
        growing = await chat.wait_reply(first.seq, lambda r: len(r.text.split()) >= 5)
        second = await chat.send("Actually, only the total please.")
        cancelled = await chat.wait_reply(first.seq, ended)
        answer = await chat.wait_reply(second.seq, ended)

        assert cancelled.reply.state == res.REPLY_STATE_CANCELLED
        assert cancelled.final
        # What had arrived is kept: at least what the watch showed, far from the 300 words.
        assert cancelled.text.startswith(growing.text)
        assert 5 <= len(cancelled.text.split()) < 300
        assert answer.reply.state == res.REPLY_STATE_COMPLETE, answer.reply.failure_reason
        assert answer.seq > cancelled.seq

        # The newer reply was asked with both user messages and without the cancelled reply.
        stats = await standin_stats(standin_port)
        sent = [(role, text) for role, text in stats["last_messages"] if role != "system"]  # type: ignore[attr-defined]
        assert sent == [
            ("user", "[words=300][pace=40] Tell me everything about my bill."),
            ("user", "Actually, only the total please."),
        ]
        # Cancelling reached the model: its stream was closed, not left to run out.
        await wait_until(
            lambda: _no_open_streams(standin_port), "the cancelled reply's model stream closed", within=10
        )
        assert [m.seq for m in await chat.messages()] == [1, 2, 3, 4]


def _ended_attempt(attempt: int, reply: res.Message) -> bool:
    return ended(reply) and reply.reply.attempt == attempt


async def _no_open_streams(port: int) -> bool:
    return (await standin_stats(port))["open_streams"] == 0


@pytest.mark.parametrize(
    ("directive", "reason", "partial"),
    [
        ("[error=500][times=2]", "LLM_UNAVAILABLE", False),
        ("[error=400][once]", "LLM_FAILED", False),
        ("[stall][once]", "LLM_TIMEOUT", False),
        ("[stall-after=4][pace=0][once]", "LLM_TIMEOUT", True),
        ("[drop-after=4][pace=0][once]", "LLM_UNAVAILABLE", True),
    ],
)
async def test_a_failed_reply_keeps_the_message_shows_why_and_can_be_retried(
    llm_mesh: Mesh, directive: str, reason: str, partial: bool
) -> None:
    async with conversation(llm_mesh) as chat:
        sent = await chat.send(f"{directive} Where is my parcel?")
        started = time.monotonic()
        failed = await chat.wait_reply(sent.seq, ended)
        assert failed.reply.state == res.REPLY_STATE_FAILED
        assert failed.reply.failure_reason == reason
        assert failed.final
        if reason == "LLM_TIMEOUT":
            assert time.monotonic() - started >= STALL_SECONDS - 0.5
        # The text that arrived before the failure is kept; none arrived for a refused request.
        assert failed.text.startswith("Stand-in reply") if partial else failed.text == ""
        stored = await chat.messages()
        assert (stored[0].seq, stored[0].text) == (sent.seq, sent.text)

        retried = await chat.retry(failed.message_id)
        assert retried.message_id == failed.message_id
        assert retried.reply.attempt == 2
        assert retried.reply.state in (res.REPLY_STATE_GENERATING, res.REPLY_STATE_COMPLETE)
        done = await chat.wait_reply(sent.seq, lambda r: ended(r) and r.reply.attempt == 2)
        assert done.reply.state == res.REPLY_STATE_COMPLETE, done.reply.failure_reason
        assert done.reply.failure_reason == ""
        assert done.seq == failed.seq  # generated again in place
        # Retrying a reply that is not FAILED changes nothing.
        assert (await chat.retry(failed.message_id)).revision == done.revision


async def test_a_reply_past_its_deadline_fails_with_what_had_arrived(llm_mesh: Mesh) -> None:
    async with conversation(llm_mesh) as chat:
        sent = await chat.send("[words=400][pace=60] Read me the whole contract.")
        failed = await chat.wait_reply(sent.seq, ended, within=REPLY_TIMEOUT_SECONDS + 10)
        assert failed.reply.state == res.REPLY_STATE_FAILED
        assert failed.reply.failure_reason == "REPLY_TIMEOUT"
        assert 10 < len(failed.text.split()) < 400


async def test_only_the_newest_reply_can_be_retried(llm_mesh: Mesh) -> None:
    async with conversation(llm_mesh) as chat:
        sent = await chat.send("[error=500] Where is my parcel?")
        failed = await chat.wait_reply(sent.seq, ended)
        assert failed.reply.state == res.REPLY_STATE_FAILED
        newer = await chat.send("Never mind.")
        await chat.wait_reply(newer.seq, ended)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await chat.retry(failed.message_id)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as not_reply:
            await chat.retry(sent.message_id)
        assert not_reply.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_history_sent_is_bounded_by_messages_and_characters(
    llm_mesh: Mesh, standin_port: int
) -> None:
    async with conversation(llm_mesh) as chat:
        for index in range(HISTORY_MESSAGES + 2):
            sent = await chat.send(f"[words=3] message number {index}")
            await chat.wait_reply(sent.seq, ended)
        stats = await standin_stats(standin_port)
        turns = [(role, text) for role, text in stats["last_messages"] if role != "system"]  # type: ignore[attr-defined]
        assert len(turns) == HISTORY_MESSAGES
        assert turns[-1] == ("user", f"[words=3] message number {HISTORY_MESSAGES + 1}")
        assert [role for role, _ in turns] == ["assistant", "user"] * (HISTORY_MESSAGES // 2)

        long_text = "word " * 300  # 1500 characters: only its end fits the character bound
        sent = await chat.send(long_text.strip())
        await chat.wait_reply(sent.seq, ended)
        stats = await standin_stats(standin_port)
        turns = [(role, text) for role, text in stats["last_messages"] if role != "system"]  # type: ignore[attr-defined]
        assert len(turns) == 1
        assert turns[0][0] == "user"
        assert len(turns[0][1]) <= HISTORY_CHARS


async def test_replies_are_internal_to_the_mesh(llm_mesh: Mesh) -> None:
    assert llm_mesh.envoy_url is not None
    assert llm_mesh.envoy_addr is not None
    token = user_token("rita")
    async with httpx.AsyncClient(base_url=llm_mesh.envoy_url, timeout=10) as http:
        for path in ("/v1/agents/default:generateReply", "/v1/agents/default:generateSummary"):
            refused = await http.post(
                path,
                json={"turns": [{"role": "TURN_ROLE_USER", "text": "hi"}]},
                headers={"authorization": f"Bearer {token}"},
            )
            assert refused.status_code == 404, (path, refused.text)
    request = agent_api.GenerateReplyRequest(
        agent_id="default", turns=[agent_res.ConversationTurn(role=agent_res.TURN_ROLE_USER, text="hi")]
    )
    async with grpc.aio.insecure_channel(llm_mesh.envoy_addr) as edge:
        with pytest.raises(grpc.aio.AioRpcError) as through_edge:
            async for _ in agent_grpc.AgentServiceStub(edge).GenerateReply(
                request, metadata=bearer(token), timeout=10
            ):
                pass
        assert through_edge.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # On the mesh network a user token is not enough either: replies are for services.
    async with grpc.aio.insecure_channel(llm_mesh.agent_addr) as direct:
        with pytest.raises(grpc.aio.AioRpcError) as user_call:
            async for _ in agent_grpc.AgentServiceStub(direct).GenerateReply(
                request, metadata=bearer(token), timeout=10
            ):
                pass
        assert user_call.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_scripted_responder_answers_without_a_model(mesh: Mesh) -> None:
    async with conversation(mesh) as chat:
        sent = await chat.send("Do you open on Sundays?")
        reply = await chat.wait_reply(sent.seq, ended)
        assert reply.reply.state == res.REPLY_STATE_COMPLETE, reply.reply.failure_reason
        assert reply.reply.generator.kind == agent_res.GENERATOR_KIND_SCRIPTED_RESPONDER
        assert reply.reply.generator.model == "profile-responder"
        assert "scripted offline responder" in reply.text
        assert "Do you open on Sundays" in reply.text


async def test_replies_fail_visibly_when_the_model_or_agent_svc_is_unreachable(
    mesh_factory: MeshFactory,
) -> None:
    closed = free_port()  # nothing listens there
    mesh = mesh_factory(
        extra_env={
            "LLM_BASE_URL": f"http://127.0.0.1:{closed}/v1",
            "LLM_MODEL": "nobody",
            "REPLY_TIMEOUT_SECONDS": "10",
        }
    )
    async with conversation(mesh) as chat:
        first = await chat.send("Hello?")
        unreachable_model = await chat.wait_reply(first.seq, ended)
        assert unreachable_model.reply.failure_reason == "LLM_UNAVAILABLE"

        mesh.stop("agent_svc")
        second = await chat.send("Is anyone there?")  # the message is kept, whatever happens to the reply
        assert second.seq == 3
        no_agent_svc = await chat.wait_reply(second.seq, ended)
        assert no_agent_svc.reply.state == res.REPLY_STATE_FAILED
        assert no_agent_svc.reply.failure_reason == "AGENT_SVC_UNAVAILABLE"

        # agent_svc back, now with the scripted responder: the failed reply is retried in place,
        # as a user does, until chat_svc's channel has reconnected (its backoff is at most 5 s).
        mesh.start("agent_svc", extra_env={"LLM_BASE_URL": "", "LLM_MODEL": ""})
        deadline = time.monotonic() + 20
        while True:
            attempt = (await chat.retry(no_agent_svc.message_id)).reply.attempt
            done = await chat.wait_reply(second.seq, functools.partial(_ended_attempt, attempt))
            if done.reply.state == res.REPLY_STATE_COMPLETE or time.monotonic() > deadline:
                break
            assert done.reply.failure_reason == "AGENT_SVC_UNAVAILABLE"
            await asyncio.sleep(1.0)
        assert done.reply.state == res.REPLY_STATE_COMPLETE, done.reply.failure_reason
        assert done.seq == no_agent_svc.seq
        assert done.reply.generator.kind == agent_res.GENERATOR_KIND_SCRIPTED_RESPONDER
    log = await asyncio.to_thread((mesh.log_dir / "chat_svc.log").read_text)
    assert "Is anyone there" not in log
    assert "Hello?" not in log


async def test_no_reply_in_a_call_conversation(llm_mesh: Mesh, standin_port: int) -> None:
    before = (await standin_stats(standin_port))["requests"]
    async with conversation(llm_mesh, res.CHANNEL_VOICE) as chat:
        await chat.send("Typed during the call.")
        await asyncio.sleep(1.5)
        assert [m.role for m in await chat.messages()] == [res.ROLE_USER]
    assert (await standin_stats(standin_port))["requests"] == before


def _summary_ready(conversation: res.Conversation) -> bool:
    return conversation.summary.state in (res.SUMMARY_STATE_READY, res.SUMMARY_STATE_FAILED)


async def _summary(chat: Conversation) -> res.Conversation:
    found: list[res.Conversation] = []

    async def ready() -> bool:
        found[:] = [await chat.get()]
        return _summary_ready(found[0])

    await wait_until(ready, "the summary", within=20)
    return found[0]


async def _report_call(mesh: Mesh, conversation_id: str, turns: list[tuple[res.Role.ValueType, str]]) -> None:
    """The turns of a call as the voice worker reports them (directly to chat_svc, as a service)."""
    assert mesh.chat_addr is not None
    segments = [
        res.TranscriptSegment(segment_id=f"test-call:{index}", role=role, text=text, final=True)
        for index, (role, text) in enumerate(turns)
    ]
    async with grpc.aio.insecure_channel(mesh.chat_addr) as channel:
        await conv_grpc.ConversationServiceStub(channel).ReportTranscript(
            conv_api.ReportTranscriptRequest(conversation_id=conversation_id, segments=segments),
            metadata=bearer(service_token("voice-worker")),
            timeout=10,
        )


CALL = [
    (res.ROLE_AGENT, "Hello! How can I help you today?"),
    (res.ROLE_USER, "I want to move my appointment to Friday."),
    (res.ROLE_AGENT, "Of course, Friday at ten works."),
    (res.ROLE_USER, "Thanks, that is all."),
]


async def test_a_call_is_summarized_by_the_model_when_it_ends(llm_mesh: Mesh, standin_port: int) -> None:
    async with conversation(llm_mesh, res.CHANNEL_VOICE) as chat:
        await _report_call(llm_mesh, chat.conversation_id, CALL)
        ended_now = await chat.end()
        assert not ended_now.HasField("summary") or ended_now.summary.state == res.SUMMARY_STATE_PENDING
        done = await _summary(chat)
    summary = done.summary
    assert summary.state == res.SUMMARY_STATE_READY, summary.failure_reason
    assert summary.kind == agent_res.SUMMARY_KIND_ABSTRACT
    assert summary.generator.kind == agent_res.GENERATOR_KIND_OPENAI_COMPATIBLE_MODEL
    assert summary.text.startswith("Stand-in reply")
    assert summary.HasField("update_time")
    stats = await standin_stats(standin_port)
    last: list[list[str]] = stats["last_messages"]  # type: ignore[assignment]
    system, user = last
    assert system[0] == "system"
    assert system[1].startswith("You summarize")
    assert user[1].splitlines() == [f"{'User' if r == res.ROLE_USER else 'Agent'}: {t}" for r, t in CALL]


async def test_with_the_scripted_responder_the_summary_is_an_honest_extract(mesh: Mesh) -> None:
    async with conversation(mesh, res.CHANNEL_VIDEO) as chat:
        await _report_call(mesh, chat.conversation_id, CALL)
        await chat.end()
        done = await _summary(chat)
    summary = done.summary
    assert summary.state == res.SUMMARY_STATE_READY, summary.failure_reason
    assert summary.kind == agent_res.SUMMARY_KIND_EXTRACT
    assert summary.generator.kind == agent_res.GENERATOR_KIND_SCRIPTED_RESPONDER
    assert summary.text.startswith("Extract of the call, not a summary")
    assert '"I want to move my appointment to Friday." / "Thanks, that is all."' in summary.text
    assert "2 user turns, 2 agent turns" in summary.text


async def test_a_silent_call_gets_an_empty_summary_and_text_conversations_none(mesh: Mesh) -> None:
    async with conversation(mesh, res.CHANNEL_VOICE) as call:
        await call.end()
        silent = await _summary(call)
    assert (silent.summary.state, silent.summary.text) == (res.SUMMARY_STATE_READY, "")
    async with conversation(mesh) as text:
        await text.end()
        await asyncio.sleep(1.0)
        assert not (await text.get()).HasField("summary")
