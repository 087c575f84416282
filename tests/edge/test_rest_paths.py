"""The LiveKit REST surface, called like curl does, through a real Envoy to a real agent_svc.

The mesh runs the real LiveKit server: tokens from the REST path are joined with the rtc package.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from livekit import api
from livekit.protocol import models as lk_models

from tests.agent_svc.livekit_support import joined, wait_for_tracks
from tests.edge.conftest import ConversationMaker
from tests.support.identity import JWT_SECRET, user_token
from tests.support.mesh import Mesh

pytestmark = pytest.mark.mesh


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _violated_fields(body: dict[str, Any]) -> list[str]:
    fields: list[str] = []
    for detail in body.get("details", []):
        if detail.get("@type", "").endswith("google.rpc.BadRequest"):
            fields += [v["field"] for v in detail.get("fieldViolations", [])]
    return fields


def _reason(body: dict[str, Any]) -> str:
    for detail in body.get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            reason: str = detail["reason"]
            return reason
    return ""


async def test_token_path_returns_a_livekit_token_that_verifies(
    mesh: Mesh, edge: httpx.AsyncClient, new_conversation: ConversationMaker
) -> None:
    conversation_id = await new_conversation("alice")
    reply = await edge.post(
        "/api/livekit/token",
        json={"conversationId": conversation_id, "userId": "alice", "agentId": "default"},
        headers=_auth(user_token("alice")),
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert {"token", "url", "roomName", "identity", "expireTime"} <= body.keys()
    assert body["roomName"] == f"conversation:{conversation_id}"
    assert body["identity"] == "alice"
    assert body["url"] == mesh.livekit.ws_url

    claims = api.TokenVerifier(mesh.livekit.api_key, mesh.livekit.api_secret).verify(body["token"])
    assert claims.identity == "alice"
    assert claims.video is not None
    assert claims.video.room == f"conversation:{conversation_id}"
    assert claims.video.room_join is True
    # The LiveKit server takes it: the token joins the conversation's room.
    async with joined(body["url"], body["token"]) as alice:
        assert (alice.identity, alice.room.name) == ("alice", body["roomName"])


async def test_room_create_is_idempotent(
    edge: httpx.AsyncClient, new_conversation: ConversationMaker
) -> None:
    conversation_id = await new_conversation("alice")
    replies = [
        await edge.post(
            "/api/livekit/room/create",
            json={"conversationId": conversation_id},
            headers=_auth(user_token("alice")),
        )
        for _ in range(2)
    ]
    assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
    first, second = (r.json() for r in replies)
    assert first["roomName"] == second["roomName"] == f"conversation:{conversation_id}"
    assert first["exists"] is False
    assert second["exists"] is True


async def _video_conversation(mesh: Mesh, edge: httpx.AsyncClient, user: str) -> str:
    """A VIDEO conversation the user owns (any fresh id when the mesh has no chat_svc)."""
    if mesh.chat_addr is None:
        return uuid.uuid4().hex
    reply = await edge.post(
        "/v1/conversations",
        json={"agentId": "default", "channel": "CHANNEL_VIDEO", "requestId": uuid.uuid4().hex},
        headers=_auth(user_token(user)),
    )
    assert reply.status_code == 200, reply.text
    conversation_id: str = reply.json()["conversation"]["conversationId"]
    return conversation_id


async def test_participants_path_lists_who_is_in_the_room(mesh: Mesh, edge: httpx.AsyncClient) -> None:
    conversation_id = await _video_conversation(mesh, edge, "alice")
    created = await edge.post(
        "/api/livekit/room/create",
        json={"conversationId": conversation_id},
        headers=_auth(user_token("alice")),
    )
    assert created.status_code == 200, created.text

    empty = await edge.get(
        f"/api/livekit/room/{conversation_id}/participants", headers=_auth(user_token("alice"))
    )
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"participants": []}

    token = await edge.post(
        "/api/livekit/token",
        json={
            "conversationId": conversation_id,
            "agentId": "default",
            "media": "CALL_MEDIA_VIDEO",
            "displayName": "Alice",
        },
        headers=_auth(user_token("alice")),
    )
    assert token.status_code == 200, token.text
    join = token.json()
    async with joined(join["url"], join["token"]) as alice:
        await alice.publish_microphone()
        await alice.publish_camera()
        server = api.LiveKitAPI(mesh.livekit.http_url, mesh.livekit.api_key, mesh.livekit.api_secret)
        try:
            sources = {lk_models.TrackSource.MICROPHONE, lk_models.TrackSource.CAMERA}
            await wait_for_tracks(server, join["roomName"], {"alice": sources})
        finally:
            await server.aclose()
        reply = await edge.get(
            f"/api/livekit/room/{conversation_id}/participants", headers=_auth(user_token("alice"))
        )
    assert reply.status_code == 200, reply.text
    participants = reply.json()["participants"]
    assert [p["identity"] for p in participants] == ["alice"]
    assert participants[0]["name"] == "Alice"
    assert participants[0]["kind"] == "PARTICIPANT_KIND_USER"
    assert participants[0]["state"] == "PARTICIPANT_STATE_ACTIVE"
    assert set(participants[0]["publishedSources"]) == {"TRACK_SOURCE_MICROPHONE", "TRACK_SOURCE_CAMERA"}


async def test_participants_of_a_missing_room_is_404_with_a_json_body(
    edge: httpx.AsyncClient, new_conversation: ConversationMaker
) -> None:
    conversation_id = await new_conversation("alice")
    reply = await edge.get(
        f"/api/livekit/room/{conversation_id}/participants", headers=_auth(user_token("alice"))
    )
    assert reply.status_code == 404, reply.text
    assert reply.json()["code"] == 5


def _forged() -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, "x" * 48, algorithm="HS256")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "TOKEN_MISSING"),
        ({"authorization": "Basic YWxpY2U6cHc="}, "TOKEN_MISSING"),
        (_auth(user_token("alice", ttl_seconds=-120)), "TOKEN_EXPIRED"),
        (_auth(_forged()), "TOKEN_INVALID"),
        (_auth("not-a-jwt"), "TOKEN_INVALID"),
    ],
    ids=["missing", "not-bearer", "expired", "forged", "garbage"],
)
async def test_bad_credentials_get_401_with_a_json_error(
    edge: httpx.AsyncClient, headers: dict[str, str], reason: str
) -> None:
    reply = await edge.post(
        "/api/livekit/token",
        json={"conversationId": "c1", "userId": "alice", "agentId": "default"},
        headers=headers,
    )
    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["code"] == 16
    assert _reason(body) == reason
    assert JWT_SECRET not in reply.text


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"userId": "alice", "agentId": "default"}, "conversation_id"),
        ({"conversationId": "has spaces!", "userId": "alice", "agentId": "default"}, "conversation_id"),
        ({"conversationId": "c" * 65, "userId": "alice", "agentId": "default"}, "conversation_id"),
        ({"conversationId": "c1", "userId": "alice"}, "agent_id"),
        ({"conversationId": "c1", "userId": "alice", "agentId": "default", "ttl": "5s"}, "ttl"),
    ],
    ids=["no-conversation", "bad-conversation", "long-conversation", "no-agent", "ttl-too-short"],
)
async def test_bad_input_gets_400_naming_the_field(
    edge: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    # A user's token: service tokens are refused at the edge (tests/edge/test_edge_identity.py).
    reply = await edge.post("/api/livekit/token", json=payload, headers=_auth(user_token("alice")))
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["code"] == 3
    assert any(field in name for name in _violated_fields(body)), body


async def test_malformed_json_gets_400(edge: httpx.AsyncClient) -> None:
    reply = await edge.post(
        "/api/livekit/token",
        content=b'{"conversationId": ',
        headers={**_auth(user_token("alice")), "content-type": "application/json"},
    )
    assert reply.status_code == 400


async def test_unknown_query_parameter_gets_400(edge: httpx.AsyncClient) -> None:
    reply = await edge.get("/api/livekit/room/c1/participants?admin=1", headers=_auth(user_token("alice")))
    assert reply.status_code == 400
    assert reply.json()["code"] == 3
    assert "admin" in reply.json()["message"]


async def test_unknown_path_gets_404(edge: httpx.AsyncClient) -> None:
    reply = await edge.post("/api/livekit/tokens", json={}, headers=_auth(user_token("alice")))
    assert reply.status_code == 404
    assert reply.json()["code"] == 5


async def test_a_user_cannot_ask_for_someone_elses_token(
    edge: httpx.AsyncClient, new_conversation: ConversationMaker
) -> None:
    conversation_id = await new_conversation("alice")
    reply = await edge.post(
        "/api/livekit/token",
        json={"conversationId": conversation_id, "userId": "bob", "agentId": "default"},
        headers=_auth(user_token("alice")),
    )
    assert reply.status_code == 403, reply.text
    assert reply.json()["code"] == 7
