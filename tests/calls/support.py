"""Helpers for call-lifecycle mesh tests: conversations and usage through Envoy, as clients see them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import httpx

from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res
from tests.support.eventually import eventually
from tests.support.identity import bearer, user_token
from tests.support.mesh import Mesh

USER = "alice"


async def get_conversation(mesh: Mesh, conversation_id: str, user: str = USER) -> conv_res.Conversation:
    """The conversation through Envoy's gRPC listener, as the user sees it."""
    assert mesh.envoy_addr is not None
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
        reply = await conv_grpc.ConversationServiceStub(channel).GetConversation(
            conv_pb.GetConversationRequest(conversation_id=conversation_id),
            metadata=bearer(user_token(user)),
            timeout=10,
        )
    return reply.conversation


async def wait_for_conversation(
    mesh: Mesh,
    conversation_id: str,
    done: Callable[[conv_res.Conversation], bool],
    *,
    within: float = 60.0,
    what: str = "the conversation to change",
) -> conv_res.Conversation:
    async def changed() -> conv_res.Conversation:
        conversation = await get_conversation(mesh, conversation_id)
        assert done(conversation), f"call is now: {conversation.call}"
        return conversation

    return await eventually(changed, within=within, interval=0.25, what=what)


async def rest(mesh: Mesh, method: str, path: str, user: str = USER, **kwargs: Any) -> httpx.Response:
    """One REST call through Envoy as `user`."""
    assert mesh.envoy_url is not None
    headers = {"authorization": f"Bearer {user_token(user)}"}
    async with httpx.AsyncClient(base_url=mesh.envoy_url, headers=headers, timeout=10) as http:
        return await http.request(method, path, **kwargs)


def seconds(stamp: Any) -> float:
    """A protobuf Timestamp or Duration as float seconds."""
    return float(stamp.seconds) + stamp.nanos / 1e9
