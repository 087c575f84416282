"""The quota guard on real calls: one call at a time, through Envoy, across an agent_svc restart.

The mesh runs the real LiveKit server and the voice worker with QUOTA_MAX_CONCURRENT_AGENT_SESSIONS=1.
"""

from __future__ import annotations

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devrun.caller import Caller
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res
from syntera.livekit.v1 import call_service_pb2 as call_pb
from syntera.livekit.v1 import call_service_pb2_grpc as call_grpc
from tests.calls.support import rest, wait_for_conversation
from tests.support.eventually import eventually
from tests.support.identity import bearer, service_token, user_token
from tests.support.mesh import AGENT_SVC, Mesh, MeshFactory
from tests.voice.real_call import new_call

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(240)]

LIMIT = "QUOTA_MAX_CONCURRENT_AGENT_SESSIONS"


async def _refused_over_rest(mesh: Mesh, method: str, path: str, body: dict[str, object]) -> None:

    async def answered() -> httpx.Response:
        response = await rest(mesh, method, path, user="bob", json=body)
        # Right after agent_svc restarts, chat_svc's channel may still be reconnecting (503: retry).
        assert response.status_code != 503, response.text
        return response

    refused = await eventually(answered, within=15, interval=0.5, what="an answer other than 503")
    assert refused.status_code == 429, refused.text
    status = refused.json()
    assert status["code"] == 8  # RESOURCE_EXHAUSTED
    details = {d["@type"].rsplit(".", 1)[-1]: d for d in status["details"]}
    assert details["ErrorInfo"]["reason"] == "QUOTA_EXCEEDED"
    (violation,) = details["QuotaFailure"]["violations"]
    assert violation["quotaId"] == LIMIT
    assert violation["subject"] == "deployment"
    assert LIMIT in violation["description"]


async def _create_voice_over_grpc(mesh: Mesh, user: str) -> conv_pb.CreateConversationResponse:
    assert mesh.envoy_addr is not None
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
        return await conv_grpc.ConversationServiceStub(channel).CreateConversation(
            conv_pb.CreateConversationRequest(agent_id="default", channel=conv_res.CHANNEL_VOICE),
            metadata=bearer(user_token(user)),
            timeout=10,
        )


async def _usage(mesh: Mesh, user_id: str = "") -> call_pb.GetUsageResponse:
    async with grpc.aio.insecure_channel(mesh.agent_addr) as channel:
        return await call_grpc.CallServiceStub(channel).GetUsage(
            call_pb.GetUsageRequest(user_id=user_id), metadata=bearer(service_token("ops")), timeout=10
        )


async def test_one_call_at_a_time_refuses_the_second_until_the_first_room_finishes(
    mesh_factory: MeshFactory,
) -> None:
    mesh = mesh_factory(with_worker=True, extra_env={LIMIT: "1", "CALL_RECONCILE_SECONDS": "5"})
    first = await new_call(mesh)
    # Bob's text conversation: no session, but a token, a room or a dispatch for it would start one.
    text = await rest(
        mesh, "POST", "/v1/conversations", user="bob", json={"agentId": "default", "channel": "CHANNEL_TEXT"}
    )
    assert text.status_code == 200, text.text
    text_id = text.json()["conversation"]["conversationId"]

    async with Caller() as caller:
        await caller.join(first.url, first.token)
        await caller.wait_for_agent(within=30)
        await wait_for_conversation(
            mesh, first.conversation_id, lambda c: c.call.state == conv_res.CALL_STATE_ACTIVE, within=30
        )

        # Every way of starting a second call is refused, naming the limit (REST through Envoy).
        await _refused_over_rest(
            mesh, "POST", "/v1/conversations", {"agentId": "default", "channel": "CHANNEL_VOICE"}
        )
        await _refused_over_rest(
            mesh, "POST", "/api/livekit/token", {"conversationId": text_id, "agentId": "default"}
        )
        await _refused_over_rest(mesh, "POST", "/api/livekit/room/create", {"conversationId": text_id})
        await _refused_over_rest(mesh, "POST", f"/api/livekit/room/{text_id}/dispatch", {})
        # gRPC callers get the same status with its QuotaFailure.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _create_voice_over_grpc(mesh, "bob")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(caught.value)
        assert status is not None
        failure = error_details_pb2.QuotaFailure()
        assert any(d.Unpack(failure) for d in status.details)
        assert failure.violations[0].quota_id == LIMIT
        # The running call itself may get a new token (a reconnect is not a new session).
        again = await rest(
            mesh,
            "POST",
            "/api/livekit/token",
            json={"conversationId": first.conversation_id, "agentId": "default"},
        )
        assert again.status_code == 200, again.text

        usage = await _usage(mesh)
        (concurrent,) = [q for q in usage.quotas if q.quota_id == LIMIT]
        assert (concurrent.limit, concurrent.used, concurrent.exhausted) == (1, 1.0, True)
        assert usage.live_calls == 1
        mine = await rest(mesh, "GET", "/v1/usage")
        assert mine.status_code == 200, mine.text
        assert mine.json()["userId"] == "alice"
        assert mine.json()["liveCalls"] == 1
        assert "used" not in mine.json()["quotas"][0]  # users see the flags, not the deployment's figures
        assert mine.json()["quotas"][0]["exhausted"] is True

        # The count lives in the store: a restarted agent_svc still refuses.
        mesh.restart(AGENT_SVC)
        await _refused_over_rest(
            mesh, "POST", "/v1/conversations", {"agentId": "default", "channel": "CHANNEL_VOICE"}
        )

    # The caller left; the room finishes after LiveKit's departure timeout and the call ends.
    await wait_for_conversation(
        mesh,
        first.conversation_id,
        lambda c: c.call.state == conv_res.CALL_STATE_ENDED,
        within=60,
        what="the first call to end",
    )
    second = await _create_voice_over_grpc(mesh, "bob")
    assert second.join_info.token

    alice = await _usage(mesh, "alice")
    assert 0 < alice.agent_minutes <= alice.participant_minutes < 5
