"""When a service behind Envoy is down, clients get UNAVAILABLE in their own format, and it recovers."""

from __future__ import annotations

import grpc
import httpx
import pytest

from syntera.conversation.v1 import conversation_service_pb2 as conversation_pb2
from syntera.conversation.v1 import conversation_service_pb2_grpc as conversation_grpc
from tests.support.identity import bearer, user_token
from tests.support.mesh import CHAT_SVC, MeshFactory

pytestmark = pytest.mark.mesh


async def test_chat_svc_down_then_back(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory(with_chat=True)
    assert mesh.envoy_url is not None
    assert mesh.envoy_addr is not None
    headers = {"authorization": f"Bearer {user_token('henry')}"}
    async with httpx.AsyncClient(base_url=mesh.envoy_url, timeout=10) as edge:
        assert (await edge.get("/v1/conversations", headers=headers)).status_code == 200

        mesh.kill(CHAT_SVC)
        down = await edge.get("/v1/conversations", headers=headers)
        assert down.status_code == 503
        assert down.headers["content-type"].startswith("application/json")
        assert down.json()["code"] == 14
        async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
            stub = conversation_grpc.ConversationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.ListConversations(
                    conversation_pb2.ListConversationsRequest(),
                    metadata=bearer(user_token("henry")),
                    timeout=10,
                )
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        # LiveKit routes go to agent_svc and are unaffected.
        other = await edge.get("/api/livekit/room/x/participants?bad=1", headers=headers)
        assert other.status_code == 400

        mesh.start(CHAT_SVC)
        assert (await edge.get("/v1/conversations", headers=headers)).status_code == 200
