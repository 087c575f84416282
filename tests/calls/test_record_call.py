"""RecordCall on the real chat_svc: services only, every bad field named, never rolled back, not public."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from syntera.conversation.v1 import conversation_service_pb2 as pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as pb_grpc
from syntera.conversation.v1 import resources_pb2 as res
from syntera.livekit.v1 import resources_pb2 as lk_res
from tests.support.identity import bearer, service_token, user_token
from tests.support.mesh import Mesh

pytestmark = pytest.mark.mesh

SERVICE = bearer(service_token("agent_svc"))
ALICE = bearer(user_token("alice"))


@pytest.fixture
async def chat(mesh: Mesh) -> AsyncIterator[pb_grpc.ConversationServiceStub]:
    assert mesh.chat_addr is not None
    async with grpc.aio.insecure_channel(mesh.chat_addr) as channel:
        yield pb_grpc.ConversationServiceStub(channel)


async def _conversation(chat: pb_grpc.ConversationServiceStub, channel: res.Channel.ValueType) -> str:
    created = await chat.CreateConversation(
        pb.CreateConversationRequest(agent_id="default", channel=channel), metadata=ALICE, timeout=10
    )
    return created.conversation.conversation_id


def _at(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def _call(revision: int, state: res.CallState.ValueType = res.CALL_STATE_ACTIVE) -> res.Call:
    call = res.Call(state=state, revision=revision, room_sid="RM_test", start_time=_at(1_800_000_000))
    call.participants.add(identity="alice", kind=lk_res.PARTICIPANT_KIND_USER, join_time=_at(1_800_000_001))
    return call


def _fields(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Unpack(bad):
            return [v.field for v in bad.field_violations]
    return []


async def test_records_only_newer_revisions(chat: pb_grpc.ConversationServiceStub) -> None:
    cid = await _conversation(chat, res.CHANNEL_VOICE)
    first = await chat.RecordCall(pb.RecordCallRequest(conversation_id=cid, call=_call(2)), metadata=SERVICE)
    assert first.applied
    assert first.conversation.call.revision == 2
    older = await chat.RecordCall(
        pb.RecordCallRequest(conversation_id=cid, call=_call(1, res.CALL_STATE_WAITING)), metadata=SERVICE
    )
    assert not older.applied
    assert older.conversation.call.state == res.CALL_STATE_ACTIVE
    again = await chat.RecordCall(pb.RecordCallRequest(conversation_id=cid, call=_call(2)), metadata=SERVICE)
    assert not again.applied
    got = await chat.GetConversation(pb.GetConversationRequest(conversation_id=cid), metadata=ALICE)
    assert got.conversation.call.revision == 2
    assert got.conversation.status == res.CONVERSATION_STATUS_ACTIVE


async def test_every_bad_field_is_named(chat: pb_grpc.ConversationServiceStub) -> None:
    cid = await _conversation(chat, res.CHANNEL_VOICE)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await chat.RecordCall(pb.RecordCallRequest(conversation_id=cid), metadata=SERVICE)
    assert _fields(missing.value) == ["call"]
    bad = res.Call(
        state=res.CALL_STATE_ENDED, revision=0, start_time=_at(1_800_000_100), end_time=_at(1_800_000_000)
    )
    bad.participants.add(identity="", kind=lk_res.PARTICIPANT_KIND_UNSPECIFIED)
    bad.participants.add(
        identity="bob", kind=lk_res.PARTICIPANT_KIND_USER, join_time=_at(10), leave_time=_at(5)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.RecordCall(pb.RecordCallRequest(conversation_id=cid, call=bad), metadata=SERVICE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(caught.value) == [
        "call.revision",
        "call.end_time",
        "call.participants[0].identity",
        "call.participants[0].kind",
        "call.participants[0].join_time",
        "call.participants[1].leave_time",
    ]


async def test_services_only_and_calls_only(chat: pb_grpc.ConversationServiceStub, mesh: Mesh) -> None:
    voice = await _conversation(chat, res.CHANNEL_VOICE)
    with pytest.raises(grpc.aio.AioRpcError) as user:
        await chat.RecordCall(pb.RecordCallRequest(conversation_id=voice, call=_call(5)), metadata=ALICE)
    assert user.value.code() == grpc.StatusCode.PERMISSION_DENIED
    text = await _conversation(chat, res.CHANNEL_TEXT)
    with pytest.raises(grpc.aio.AioRpcError) as not_a_call:
        await chat.RecordCall(pb.RecordCallRequest(conversation_id=text, call=_call(1)), metadata=SERVICE)
    assert not_a_call.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Internal: the edge does not route it, over REST or gRPC.
    assert mesh.envoy_url is not None
    async with httpx.AsyncClient(base_url=mesh.envoy_url, timeout=10) as http:
        blocked = await http.post(
            f"/v1/conversations/{voice}:recordCall",
            json={"call": {"state": "CALL_STATE_ENDED", "revision": 99}},
            headers={"authorization": f"Bearer {user_token('alice')}"},
        )
    assert blocked.status_code == 404
    assert mesh.envoy_addr is not None
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as edge:
            await pb_grpc.ConversationServiceStub(channel).RecordCall(
                pb.RecordCallRequest(conversation_id=voice, call=_call(99)), metadata=ALICE, timeout=10
            )
    assert edge.value.code() == grpc.StatusCode.UNIMPLEMENTED
