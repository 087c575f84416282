"""Real calls: a conversation and its join token through Envoy's REST paths, as pages get them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from livekit import api
from livekit.protocol import models as lk_models

from syntera.conversation.v1 import resources_pb2 as res
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
    deadline = time.monotonic() + within
    messages: list[res.Message] = []
    while time.monotonic() < deadline:
        messages = await list_messages(mesh, conversation_id)
        if done(messages):
            return messages
        await asyncio.sleep(0.2)
    stored = [(m.seq, res.Role.Name(m.role), m.final, m.interrupted, len(m.text)) for m in messages]
    raise AssertionError(f"messages did not arrive within {within:.0f} s; stored: {stored}")


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
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {within:.0f} s")
