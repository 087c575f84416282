"""Webhooks lost on purpose are repaired by reconciliation with the real LiveKit server.

The relay between the server and Envoy answers the server but drops every participant_joined,
participant_left and room_finished webhook: only room_started gets through. agent_svc compares
its records with the server's rooms and participants every few seconds and fills in the rest.
"""

from __future__ import annotations

import time

import pytest

from devrun.caller import Caller
from devrun.livekit_server import webhook_endpoint
from syntera.conversation.v1 import resources_pb2 as conv_res
from syntera.livekit.v1 import resources_pb2 as lk_res
from tests.calls.relay import WebhookRelay
from tests.calls.support import seconds, wait_for_conversation
from tests.support.mesh import MeshFactory
from tests.voice.real_call import USER, new_call

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(180)]

RECONCILE_SECONDS = 3
LOST = {"participant_joined", "participant_left", "room_finished"}
# LiveKit closes an empty room this long after its last participant left (its default).
DEPARTURE_TIMEOUT_SECONDS = 20


async def test_lost_webhooks_are_repaired_by_reconciliation(mesh_factory: MeshFactory) -> None:
    with WebhookRelay(drop=set(LOST)) as relay:
        mesh = mesh_factory(
            webhook_url=relay.url, extra_env={"CALL_RECONCILE_SECONDS": str(RECONCILE_SECONDS)}
        )
        assert mesh.envoy_url is not None
        relay.target = webhook_endpoint(mesh.envoy_url)
        join = await new_call(mesh)
        async with Caller() as caller:
            await caller.join(join.url, join.token)
            joined_at = time.time()
            active = await wait_for_conversation(
                mesh,
                join.conversation_id,
                lambda c: c.call.state == conv_res.CALL_STATE_ACTIVE,
                within=RECONCILE_SECONDS + 10,
                what="reconciliation to find the user in the room",
            )
        left_at = time.time()
        waiting = await wait_for_conversation(
            mesh,
            join.conversation_id,
            lambda c: c.call.state == conv_res.CALL_STATE_WAITING,
            within=RECONCILE_SECONDS + 10,
            what="reconciliation to find the user gone",
        )
        ended = await wait_for_conversation(
            mesh,
            join.conversation_id,
            lambda c: c.status == conv_res.CONVERSATION_STATUS_ENDED,
            within=DEPARTURE_TIMEOUT_SECONDS + RECONCILE_SECONDS + 20,
            what="reconciliation to find the room gone",
        )
        # The webhooks were really lost: the server sent them, none reached agent_svc.
        for event in LOST:
            assert relay.received(event), event
            assert all(d.forwarded_status is None for d in relay.received(event))

    (user,) = active.call.participants
    assert (user.identity, user.kind) == (USER, lk_res.PARTICIPANT_KIND_USER)
    # The join time is the server's own, the leave time when reconciliation noticed.
    assert joined_at - 2 <= seconds(user.join_time) <= joined_at + 1
    (gone,) = waiting.call.participants
    assert left_at - 1 <= seconds(gone.leave_time) <= left_at + RECONCILE_SECONDS + 2
    call = ended.call
    assert call.state == conv_res.CALL_STATE_ENDED
    assert call.end_reason == conv_res.CALL_END_REASON_ROOM_LOST
    assert seconds(call.end_time) >= left_at + DEPARTURE_TIMEOUT_SECONDS - 2
    assert call.room_sid == active.call.room_sid
