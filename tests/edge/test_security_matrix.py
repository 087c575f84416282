"""Every cross-user attempt is refused, end to end: Envoy → chat_svc / agent_svc (→ chat_svc for ownership).

Alice owns a voice call: a room on the real LiveKit server that she has joined with the rtc package. Bob,
signed in with his own valid token, tries every path on it. Afterwards Alice's call is untouched: she is
still connected (Bob's DeleteRoom would have disconnected her) and the only one in the room.
"""

from __future__ import annotations

import grpc
import httpx
import pytest

from syntera.conversation.v1 import conversation_service_pb2 as conversation_pb2
from syntera.conversation.v1 import conversation_service_pb2_grpc as conversation_grpc
from syntera.conversation.v1 import resources_pb2 as conversation_resources
from tests.agent_svc.livekit_support import joined
from tests.edge.conftest import ConversationMaker
from tests.support.identity import bearer, user_token
from tests.support.mesh import Mesh

pytestmark = pytest.mark.mesh


def _auth(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {user_token(user)}"}


def _attempts(cid: str) -> list[tuple[str, str, dict[str, object] | None]]:
    """(method, path, JSON body) for every RPC that touches one conversation."""
    return [
        ("GET", f"/v1/conversations/{cid}", None),
        ("GET", f"/v1/conversations/{cid}/messages", None),
        ("GET", f"/v1/conversations/{cid}:watch", None),
        ("POST", f"/v1/conversations/{cid}/messages", {"text": "hello from bob"}),
        ("POST", f"/v1/conversations/{cid}:end", {}),
        ("POST", "/api/livekit/token", {"conversationId": cid, "userId": "bob", "agentId": "default"}),
        ("POST", "/api/livekit/token", {"conversationId": cid, "agentId": "default"}),
        ("POST", "/api/livekit/room/create", {"conversationId": cid}),
        ("GET", f"/api/livekit/room/{cid}/participants", None),
        ("POST", f"/api/livekit/room/{cid}/dispatch", {"agentId": "default"}),
        ("DELETE", f"/api/livekit/room/{cid}", None),
    ]


async def _owned_call(edge: httpx.AsyncClient, new_conversation: ConversationMaker) -> str:
    cid = await new_conversation("alice")
    created = await edge.post(
        "/api/livekit/room/create", json={"conversationId": cid}, headers=_auth("alice")
    )
    assert created.status_code == 200, created.text
    return cid


async def test_another_user_is_refused_on_every_path(
    mesh: Mesh, edge: httpx.AsyncClient, new_conversation: ConversationMaker
) -> None:
    cid = await _owned_call(edge, new_conversation)
    token = await edge.post(
        "/api/livekit/token", json={"conversationId": cid, "agentId": "default"}, headers=_auth("alice")
    )
    assert token.status_code == 200, token.text
    async with joined(token.json()["url"], token.json()["token"]) as alice:
        for method, path, body in _attempts(cid):
            reply = await edge.request(method, path, json=body, headers=_auth("bob"), timeout=10)
            assert reply.status_code == 403, f"{method} {path}: {reply.status_code} {reply.text}"
            assert reply.json()["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0], f"{method} {path}"
        assert alice.room.isconnected()
        assert not alice.disconnected.is_set()
        participants = await edge.get(f"/api/livekit/room/{cid}/participants", headers=_auth("alice"))
        assert [p["identity"] for p in participants.json()["participants"]] == ["alice"]

    listed = await edge.get("/v1/conversations?pageSize=100", headers=_auth("bob"))
    assert listed.status_code == 200, listed.text
    assert cid not in [c["conversationId"] for c in listed.json().get("conversations", [])]

    # Nothing Bob tried changed Alice's call.
    got = await edge.get(f"/v1/conversations/{cid}", headers=_auth("alice"))
    assert got.json()["conversation"]["status"] == "CONVERSATION_STATUS_ACTIVE"
    messages = await edge.get(f"/v1/conversations/{cid}/messages", headers=_auth("alice"))
    assert messages.json().get("messages", []) == []
    room = await edge.post("/api/livekit/room/create", json={"conversationId": cid}, headers=_auth("alice"))
    assert room.json()["exists"] is True


async def test_every_path_without_a_token_is_401(
    edge: httpx.AsyncClient, new_conversation: ConversationMaker
) -> None:
    cid = await new_conversation("alice")
    for method, path, body in [*_attempts(cid), ("GET", "/v1/conversations", None)]:
        reply = await edge.request(method, path, json=body, timeout=10)
        assert reply.status_code == 401, f"{method} {path}: {reply.status_code} {reply.text}"
        assert reply.json()["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]


async def test_a_user_token_cannot_report_transcripts(
    mesh: Mesh, new_conversation: ConversationMaker
) -> None:
    assert mesh.chat_addr is not None
    cid = await new_conversation("alice")
    request = conversation_pb2.ReportTranscriptRequest(
        conversation_id=cid,
        segments=[
            conversation_resources.TranscriptSegment(
                segment_id="forged-1",
                role=conversation_resources.ROLE_AGENT,
                text="I am the agent",
                final=True,
            )
        ],
    )
    async with grpc.aio.insecure_channel(mesh.chat_addr) as channel:
        stub = conversation_grpc.ConversationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReportTranscript(request, metadata=bearer(user_token("alice")), timeout=10)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        listed = await stub.ListMessages(
            conversation_pb2.ListMessagesRequest(conversation_id=cid),
            metadata=bearer(user_token("alice")),
            timeout=10,
        )
        assert list(listed.messages) == []
