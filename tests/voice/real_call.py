"""Real calls: a conversation and its join token through Envoy's REST paths, as pages get them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from livekit import api
from livekit.protocol import models as lk_models

from syntera.conversation.v1 import resources_pb2 as res
from tests.support.eventually import eventually
from tests.support.identity import user_token
from tests.support.mesh import Mesh
from tests.voice.calls import list_messages

USER = "alice"


@dataclass(frozen=True)
class Join:
    """A voice conversation and what the caller needs to join its room."""

    conversation_id: str
    url: str
    token: str
    room_name: str


async def new_call(mesh: Mesh, user: str = USER, *, agent_id: str = "default") -> Join:
    """Creates a VOICE conversation, then gets a join token with `POST /api/livekit/token`."""
    assert mesh.envoy_url is not None
    headers = {"authorization": f"Bearer {user_token(user)}"}
    async with httpx.AsyncClient(base_url=mesh.envoy_url, headers=headers, timeout=10) as http:
        created = await http.post("/v1/conversations", json={"agentId": agent_id, "channel": "CHANNEL_VOICE"})
        assert created.status_code == 200, created.text
        conversation_id = created.json()["conversation"]["conversationId"]
        request = {"conversationId": conversation_id, "userId": user, "agentId": agent_id}
        joined = await http.post("/api/livekit/token", json=request)
        assert joined.status_code == 200, joined.text
        body = joined.json()
    return Join(conversation_id, body["url"], body["token"], body["roomName"])


async def wait_for_messages(
    mesh: Mesh,
    conversation_id: str,
    done: Callable[[list[res.Message]], bool],
    *,
    within: float = 30.0,
) -> list[res.Message]:
    """Polls ListMessages until `done(messages)` holds; fails with what was stored."""

    async def arrived() -> tuple[list[res.Message]]:
        messages = await list_messages(mesh, conversation_id)
        stored = [(m.seq, res.Role.Name(m.role), m.final, m.interrupted, len(m.text)) for m in messages]
        assert done(messages), f"stored: {stored}"
        return (messages,)  # a true value even when `done` accepts no messages at all

    (messages,) = await eventually(arrived, within=within, interval=0.2, what="the messages")
    return messages


def final_turns(messages: list[res.Message], role: res.Role.ValueType) -> list[res.Message]:
    return [m for m in messages if m.role == role and m.final and m.source == res.MESSAGE_SOURCE_TRANSCRIPT]


@asynccontextmanager
async def livekit_api(mesh: Mesh) -> AsyncIterator[api.LiveKitAPI]:
    """The LiveKit server API, to see what the server itself says about rooms and participants."""
    client = api.LiveKitAPI(mesh.livekit.http_url, mesh.livekit.api_key, mesh.livekit.api_secret)
    try:
        yield client
    finally:
        await client.aclose()


async def participants(mesh: Mesh, room_name: str) -> list[lk_models.ParticipantInfo]:
    """Who the server has in the room (none when the room is gone)."""
    async with livekit_api(mesh) as client:
        try:
            reply = await client.room.list_participants(api.ListParticipantsRequest(room=room_name))
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND:
                return []
            raise
    return list(reply.participants)


async def agents_in_room(mesh: Mesh, room_name: str) -> list[str]:
    return [
        p.identity
        for p in await participants(mesh, room_name)
        if p.kind == lk_models.ParticipantInfo.Kind.AGENT
    ]


async def wait_for(probe: Callable[[], Awaitable[bool]], what: str, *, within: float = 30.0) -> None:
    """Polls `probe` until it holds; fails naming `what`."""
    await eventually(probe, within=within, interval=0.2, what=what)
