"""A real call's lifecycle from the LiveKit server's webhooks, on the real server through Envoy.

The mesh's LiveKit server sends its webhooks to Envoy's `POST /api/livekit/webhook`, which hands
the exact bytes to agent_svc; the call record reaches the conversation in chat_svc.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from devrun.caller import Caller
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res
from syntera.livekit.v1 import resources_pb2 as lk_res
from tests.calls.support import get_conversation, seconds, wait_for_conversation
from tests.support.identity import bearer, user_token
from tests.support.mesh import MeshFactory
from tests.voice.real_call import USER, new_call

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(240)]

# The LiveKit server closes a room this long after its last participant left (its default).
DEPARTURE_TIMEOUT_SECONDS = 20
# LiveKit stamps webhook events in whole seconds.
SLACK_SECONDS = 2.5


async def test_a_real_call_is_recorded_from_webhooks_and_ends_its_conversation(
    mesh_factory: MeshFactory,
) -> None:
    mesh = mesh_factory(with_worker=True)
    join = await new_call(mesh)
    before = await get_conversation(mesh, join.conversation_id)
    assert before.call.state == conv_res.CALL_STATE_WAITING

    assert mesh.envoy_addr is not None
    channel = grpc.aio.insecure_channel(mesh.envoy_addr)
    watch = conv_grpc.ConversationServiceStub(channel).WatchConversation(
        conv_pb.WatchConversationRequest(conversation_id=join.conversation_id),
        metadata=bearer(user_token(USER)),
    )
    watched: list[conv_pb.WatchConversationResponse] = []

    async def follow() -> None:
        async for event in watch:
            watched.append(event)

    follower = asyncio.create_task(follow())
    try:
        joined_at = time.time()
        async with Caller() as caller:
            await caller.join(join.url, join.token)
            await caller.wait_for_agent(within=30)
            await caller.wait_for_agent_speech(after=0, within=30)
            active = await wait_for_conversation(
                mesh,
                join.conversation_id,
                lambda c: (
                    c.call.state == conv_res.CALL_STATE_ACTIVE and bool(c.call.HasField("agent_join_time"))
                ),
                what="an active call with its agent",
            )
            await asyncio.sleep(2)
        left_at = time.time()
        ended = await wait_for_conversation(
            mesh,
            join.conversation_id,
            lambda c: c.status == conv_res.CONVERSATION_STATUS_ENDED,
            within=DEPARTURE_TIMEOUT_SECONDS + 30,
            what="the call and its conversation to end",
        )
        await asyncio.wait_for(follower, 10)
    finally:
        follower.cancel()
        await channel.close()

    kinds = {p.kind for p in active.call.participants}
    assert kinds == {lk_res.PARTICIPANT_KIND_USER, lk_res.PARTICIPANT_KIND_AGENT}
    call = ended.call
    assert call.state == conv_res.CALL_STATE_ENDED
    assert call.end_reason == conv_res.CALL_END_REASON_USER_LEFT
    assert call.room_sid.startswith("RM_")
    start, end = seconds(call.start_time), seconds(call.end_time)
    # The room started when the caller joined, and finished its departure timeout after it left.
    assert joined_at - SLACK_SECONDS <= start <= joined_at + SLACK_SECONDS
    assert (
        left_at + DEPARTURE_TIMEOUT_SECONDS - SLACK_SECONDS <= end <= left_at + DEPARTURE_TIMEOUT_SECONDS + 10
    )
    assert seconds(call.duration) == pytest.approx(end - start, abs=0.01)
    (user,) = [p for p in call.participants if p.kind == lk_res.PARTICIPANT_KIND_USER]
    assert user.identity == USER
    assert start <= seconds(user.join_time) <= joined_at + SLACK_SECONDS
    assert left_at - SLACK_SECONDS <= seconds(user.leave_time) <= left_at + SLACK_SECONDS
    agents = [p for p in call.participants if p.kind == lk_res.PARTICIPANT_KIND_AGENT]
    assert len(agents) == 1
    assert seconds(call.agent_join_time) == seconds(agents[0].join_time)
    assert seconds(user.join_time) - 1 <= seconds(call.agent_join_time) <= seconds(user.join_time) + 15
    assert all(seconds(p.leave_time) <= end for p in call.participants)
    assert call.agent_redispatches == 0
    # The conversation ended with its call, at the call's end.
    assert seconds(ended.end_time) == pytest.approx(end, abs=0.01)
    # The watcher saw the call go active and end (revisions only grow), then the conversation end.
    updates = [e.call_updated for e in watched if e.HasField("call_updated")]
    assert [u.revision for u in updates] == sorted({u.revision for u in updates})
    assert any(u.state == conv_res.CALL_STATE_ACTIVE for u in updates)
    assert updates[-1].state == conv_res.CALL_STATE_ENDED
    assert watched[-1].HasField("conversation_ended")
