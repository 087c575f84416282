"""ConversationService through Envoy: JSON (server streams as NDJSON), gRPC-web and native gRPC."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from typing import Any

import grpc
import httpx
import pytest
from livekit import api

from syntera.conversation.v1 import conversation_service_pb2 as conversation_pb2
from syntera.conversation.v1 import conversation_service_pb2_grpc as conversation_grpc
from tests.agent_svc.livekit_support import joined
from tests.support.identity import bearer, user_token
from tests.support.mesh import Mesh

pytestmark = pytest.mark.mesh

LIST_CONVERSATIONS = "/syntera.conversation.v1.ConversationService/ListConversations"


@pytest.fixture(autouse=True)
def _needs_chat(mesh: Mesh) -> None:
    assert mesh.chat_addr is not None, "chat_svc must be part of the mesh for these tests"


def _auth(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {user_token(user)}"}


async def _create(edge: httpx.AsyncClient, user: str, channel: str) -> dict[str, Any]:
    reply = await edge.post(
        "/v1/conversations",
        json={"agentId": "default", "channel": channel, "requestId": uuid.uuid4().hex},
        headers=_auth(user),
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_voice_call_setup_through_json(mesh: Mesh, edge: httpx.AsyncClient) -> None:
    created = await _create(edge, "carol", "CHANNEL_VOICE")
    conversation = created["conversation"]
    join = created["joinInfo"]
    assert conversation["userId"] == "carol"
    assert join["roomName"] == f"conversation:{conversation['conversationId']}"
    claims = api.TokenVerifier(mesh.livekit.api_key, mesh.livekit.api_secret).verify(join["token"])
    assert claims.identity == "carol"
    assert claims.room_config is not None
    assert [a.agent_name for a in claims.room_config.agents] == ["syntera-voice"]
    metadata = json.loads(claims.room_config.agents[0].metadata)
    assert metadata == {"conversationId": conversation["conversationId"], "agentId": "default"}
    # The join info is usable as it comes: the LiveKit server admits carol to the room.
    assert join["url"] == mesh.livekit.ws_url
    async with joined(join["url"], join["token"]) as carol:
        assert (carol.identity, carol.room.name) == ("carol", join["roomName"])

    got = await edge.get(f"/v1/conversations/{conversation['conversationId']}", headers=_auth("carol"))
    assert got.status_code == 200, got.text
    listed = await edge.get("/v1/conversations?pageSize=50", headers=_auth("carol"))
    assert listed.status_code == 200, listed.text
    assert conversation["conversationId"] in [c["conversationId"] for c in listed.json()["conversations"]]
    ended = await edge.post(
        f"/v1/conversations/{conversation['conversationId']}:end", json={}, headers=_auth("carol")
    )
    assert ended.status_code == 200, ended.text


async def test_watch_streams_ndjson_as_events_happen(edge: httpx.AsyncClient) -> None:
    conversation_id = (await _create(edge, "dave", "CHANNEL_TEXT"))["conversation"]["conversationId"]
    received: list[dict[str, Any]] = []
    first_message = asyncio.Event()

    async def watch() -> None:
        async with edge.stream(
            "GET", f"/v1/conversations/{conversation_id}:watch", headers=_auth("dave"), timeout=None
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("application/json")
            async for line in stream.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)  # one complete JSON object per line
                received.append(event)
                if "message" in event:
                    first_message.set()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(0.5)  # the stream is open and idle before anything is sent
        sent = await edge.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"text": "hello edge"},
            headers=_auth("dave"),
        )
        assert sent.status_code == 200, sent.text
        # Delivered while the stream stays open: incremental, not buffered until the end.
        await asyncio.wait_for(first_message.wait(), timeout=15)
        assert not watcher.done()
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
    messages = [e["message"] for e in received if "message" in e]
    assert messages[0]["text"] == "hello edge"
    assert messages[0]["seq"] in (1, "1")


async def test_watch_of_someone_elses_conversation_is_refused(edge: httpx.AsyncClient) -> None:
    conversation_id = (await _create(edge, "erin", "CHANNEL_TEXT"))["conversation"]["conversationId"]
    reply = await edge.get(f"/v1/conversations/{conversation_id}:watch", headers=_auth("mallory"))
    assert reply.status_code in (403, 404), reply.text
    assert reply.json()["code"] in (5, 7)
    anonymous = await edge.get(f"/v1/conversations/{conversation_id}:watch")
    assert anonymous.status_code == 401


async def test_grpc_web_unary_call(edge: httpx.AsyncClient) -> None:
    conversation_id = (await _create(edge, "frank", "CHANNEL_TEXT"))["conversation"]["conversationId"]
    request = conversation_pb2.ListConversationsRequest(page_size=10).SerializeToString()
    reply = await edge.post(
        LIST_CONVERSATIONS,
        content=struct.pack(">BI", 0, len(request)) + request,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **_auth("frank")},
    )
    assert reply.status_code == 200
    flag, length = struct.unpack(">BI", reply.content[:5])
    assert flag == 0
    listed = conversation_pb2.ListConversationsResponse.FromString(reply.content[5 : 5 + length])
    assert conversation_id in [c.conversation_id for c in listed.conversations]
    assert b"grpc-status:0" in reply.content[5 + length :]


async def test_native_grpc_stream_through_envoy(mesh: Mesh, edge: httpx.AsyncClient) -> None:
    conversation_id = (await _create(edge, "grace", "CHANNEL_TEXT"))["conversation"]["conversationId"]
    sent = await edge.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"text": "before watching"},
        headers=_auth("grace"),
    )
    assert sent.status_code == 200, sent.text
    assert mesh.envoy_addr is not None
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
        stub = conversation_grpc.ConversationServiceStub(channel)
        call = stub.WatchConversation(
            conversation_pb2.WatchConversationRequest(conversation_id=conversation_id),
            metadata=bearer(user_token("grace")),
            timeout=30,
        )
        async for event in call:
            if event.HasField("message"):
                assert event.message.text == "before watching"
                break
        call.cancel()
