"""Tokens stay exact with agent_svc's conversation cache, on the real mesh (through Envoy).

An ended conversation and another user's never get a token, whether the end came through chat_svc,
straight into the store, or while chat_svc (so the ends stream) was down.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from devrun.mesh import AGENT_SVC, CHAT_SVC, Mesh
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res
from syntera.livekit.v1 import livekit_service_pb2 as lk_pb
from syntera.livekit.v1 import livekit_service_pb2_grpc as lk_grpc
from tests.support.eventually import eventually
from tests.support.identity import bearer, service_token, user_token
from tests.support.mesh import MeshFactory

pytestmark = [pytest.mark.mesh]

ALICE = bearer(user_token("alice"))
BOB = bearer(user_token("bob"))


@asynccontextmanager
async def _stubs(
    mesh: Mesh,
) -> AsyncIterator[tuple[lk_grpc.LiveKitServiceAsyncStub, conv_grpc.ConversationServiceAsyncStub]]:
    assert mesh.envoy_addr is not None
    assert mesh.chat_addr is not None
    async with (
        grpc.aio.insecure_channel(mesh.envoy_addr) as edge,
        grpc.aio.insecure_channel(mesh.chat_addr) as chat,
    ):
        tokens: lk_grpc.LiveKitServiceAsyncStub = lk_grpc.LiveKitServiceStub(edge)
        conversations: conv_grpc.ConversationServiceAsyncStub = conv_grpc.ConversationServiceStub(chat)
        yield tokens, conversations


async def _conversation(chat: conv_grpc.ConversationServiceAsyncStub) -> str:
    reply = await chat.CreateConversation(
        conv_pb.CreateConversationRequest(
            agent_id="default", channel=conv_res.CHANNEL_VOICE, request_id=uuid.uuid4().hex
        ),
        metadata=ALICE,
        timeout=10,
    )
    return reply.conversation.conversation_id


async def _token(
    tokens: lk_grpc.LiveKitServiceAsyncStub, conversation_id: str, who: tuple[tuple[str, str], ...] = ALICE
) -> grpc.StatusCode:
    try:
        await tokens.GenerateToken(
            lk_pb.GenerateTokenRequest(conversation_id=conversation_id, agent_id="default"),
            metadata=who,
            timeout=10,
        )
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _agent_log(mesh: Mesh) -> str:
    return (mesh.log_dir / f"{AGENT_SVC}.log").read_text(errors="replace")


async def _cache_on(mesh: Mesh, times: int = 1) -> None:
    await eventually(
        lambda: _agent_log(mesh).count("cache on") >= times, within=20, what="agent_svc following ends"
    )


async def _end_in_store(mesh: Mesh, conversation_id: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mesh.env["MONGODB_URI"], timeoutMS=10_000)
    try:
        await client[mesh.database]["conversations"].update_one(
            {"_id": conversation_id}, {"$set": {"status": "ENDED"}}
        )
    finally:
        await client.close()


async def test_ended_and_foreign_conversations_never_get_a_token(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory(standin=True)
    await _cache_on(mesh)
    async with _stubs(mesh) as (tokens, chat):
        ended_by_user = await _conversation(chat)
        for _ in range(3):  # the second and third come from the cache
            assert await _token(tokens, ended_by_user) == grpc.StatusCode.OK
        assert await _token(tokens, ended_by_user, BOB) == grpc.StatusCode.PERMISSION_DENIED
        await chat.EndConversation(
            conv_pb.EndConversationRequest(conversation_id=ended_by_user), metadata=ALICE, timeout=10
        )
        # At once: EndConversation's answer comes after chat_svc told agent_svc.
        assert await _token(tokens, ended_by_user) == grpc.StatusCode.FAILED_PRECONDITION
        assert await _token(tokens, ended_by_user, BOB) == grpc.StatusCode.PERMISSION_DENIED

        # Ended by another writer of the store: the change feed brings it.
        ended_elsewhere = await _conversation(chat)
        assert await _token(tokens, ended_elsewhere) == grpc.StatusCode.OK
        await _end_in_store(mesh, ended_elsewhere)
        assert await _refused_soon(tokens, ended_elsewhere)


async def _refused_soon(tokens: lk_grpc.LiveKitServiceAsyncStub, conversation_id: str) -> bool:
    async def refused() -> bool:
        return await _token(tokens, conversation_id) == grpc.StatusCode.FAILED_PRECONDITION

    return await eventually(refused, within=5, what="the end reaching agent_svc")


async def test_with_the_ends_stream_down_every_token_asks_chat_svc(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory(standin=True)
    await _cache_on(mesh)
    async with _stubs(mesh) as (tokens, chat):
        cached = await _conversation(chat)
        assert await _token(tokens, cached) == grpc.StatusCode.OK
        assert await _token(tokens, cached) == grpc.StatusCode.OK
        mesh.stop(CHAT_SVC)
        await eventually(
            lambda: "cache off until back" in _agent_log(mesh),
            within=10,
            what="agent_svc seeing the stream drop",
        )
        # Not from memory: chat_svc cannot be asked, so the token cannot be given.
        assert await _token(tokens, cached) == grpc.StatusCode.UNAVAILABLE
        # Ended while nobody streamed ends: the cache starts empty on the new stream.
        await _end_in_store(mesh, cached)
        mesh.start(CHAT_SVC)
        await _cache_on(mesh, times=2)
        assert await _token(tokens, cached) == grpc.StatusCode.FAILED_PRECONDITION

        # And with the stream back, the cache is used and exact again.
        fresh = await _conversation(chat)
        assert await _token(tokens, fresh) == grpc.StatusCode.OK
        await chat.EndConversation(
            conv_pb.EndConversationRequest(conversation_id=fresh), metadata=ALICE, timeout=10
        )
        assert await _token(tokens, fresh) == grpc.StatusCode.FAILED_PRECONDITION


async def test_users_cannot_follow_conversation_ends(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory(standin=True, with_envoy=True)
    assert mesh.chat_addr is not None
    assert mesh.envoy_addr is not None
    request = conv_pb.WatchConversationEndsRequest()
    async with grpc.aio.insecure_channel(mesh.chat_addr) as chat:
        stub = conv_grpc.ConversationServiceStub(chat)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.WatchConversationEnds(request, metadata=ALICE, timeout=10):
                pass
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A service gets `opened` first.
        stream = stub.WatchConversationEnds(request, metadata=bearer(service_token("agent_svc")), timeout=10)
        first = await stream.read()
        assert isinstance(first, conv_pb.WatchConversationEndsResponse)
        assert first.WhichOneof("event") == "opened"
        stream.cancel()
    # Not through the edge, whoever asks.
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as edge:
        stub = conv_grpc.ConversationServiceStub(edge)
        with pytest.raises(grpc.aio.AioRpcError) as blocked:
            async for _ in stub.WatchConversationEnds(request, metadata=ALICE, timeout=10):
                pass
        assert blocked.value.code() != grpc.StatusCode.OK


async def test_worker_processes_share_the_port_and_stop_together(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory(standin=True, extra_env={"AGENT_SVC_WORKERS": "2"})
    group = mesh.process(AGENT_SVC).pid
    await eventually(lambda: len(_members(group)) == 2, within=20, what="two agent_svc processes")
    await eventually(lambda: _agent_log(mesh).count("cache on") >= 2, within=20, what="both following ends")
    async with _stubs(mesh) as (tokens, chat):
        conversation = await _conversation(chat)
        # Envoy spreads its calls over several connections, so over both processes.
        results = await asyncio.gather(*(_token(tokens, conversation) for _ in range(40)))
        assert set(results) == {grpc.StatusCode.OK}
        await chat.EndConversation(
            conv_pb.EndConversationRequest(conversation_id=conversation), metadata=ALICE, timeout=10
        )
        results = await asyncio.gather(*(_token(tokens, conversation) for _ in range(40)))
        assert set(results) == {grpc.StatusCode.FAILED_PRECONDITION}
    mesh.stop(AGENT_SVC)
    assert _members(group) == []


def _members(group: int) -> list[int]:
    """Live processes of a process group (the first agent_svc process leads its workers')."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(entry.name))
    return members
