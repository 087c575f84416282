"""LiveKitService over real gRPC against the LiveKit stand-in and a fake chat_svc."""

from __future__ import annotations

import json
import time

import grpc
import pytest
import structlog
from google.protobuf import duration_pb2
from livekit.api import TokenVerifier

from agent_svc.app import create_server
from servicekit import auth
from servicekit.server import RunningServer
from syntera.conversation.v1 import resources_pb2 as conv_res
from syntera.livekit.v1 import livekit_service_pb2 as pb
from syntera.livekit.v1 import livekit_service_pb2_grpc as pb_grpc
from syntera.livekit.v1 import resources_pb2 as res
from tests.agent_svc.conftest import AgentSvc
from tests.agent_svc.support import (
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    FakeConversationService,
    StoredConversation,
    make_settings,
    rich_error,
)
from tests.conftest import Store
from tests.support.identity import bearer, service_token, user_token
from tests.support.livekit_standin import LiveKitStandIn

pytestmark = pytest.mark.grpc

ALICE = bearer(user_token("alice"))
SERVICE = bearer(service_token("chat_svc"))


@pytest.fixture(autouse=True)
def conversations(chat: FakeConversationService) -> None:
    chat.conversations["c-voice"] = StoredConversation("alice", "a1")
    chat.conversations["c-video"] = StoredConversation("alice", "a1", channel=conv_res.CHANNEL_VIDEO)
    chat.conversations["c-bob"] = StoredConversation("bob", "a1")
    chat.conversations["c-ended"] = StoredConversation(
        "alice", "a1", status=conv_res.CONVERSATION_STATUS_ENDED
    )


def _verify() -> TokenVerifier:
    return TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET)


# -- GenerateToken ---------------------------------------------------------------------------------


async def test_user_gets_voice_token_for_own_conversation(
    agent_svc: AgentSvc, livekit: LiveKitStandIn
) -> None:
    reply = await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(conversation_id="c-voice", user_id="alice", agent_id="a1"), metadata=ALICE
    )
    claims = _verify().verify(reply.token)
    assert claims.identity == "alice" == reply.identity
    assert reply.room_name == "conversation:c-voice"
    assert reply.url == livekit.url
    assert reply.participant_kind == res.PARTICIPANT_KIND_USER
    assert reply.agent_name == "syntera-voice"
    assert claims.video is not None
    assert claims.video.can_publish_sources == ["microphone"]
    assert claims.room_config is not None
    assert json.loads(claims.room_config.agents[0].metadata) == {"conversationId": "c-voice", "agentId": "a1"}
    assert abs(reply.expire_time.seconds - (time.time() + 3600)) <= 5


async def test_user_token_follows_the_conversation_channel(agent_svc: AgentSvc) -> None:
    # Empty user_id means the caller; media comes from chat_svc's conversation.
    reply = await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(conversation_id="c-video", agent_id="a1"), metadata=ALICE
    )
    claims = _verify().verify(reply.token)
    assert claims.video is not None
    assert claims.video.can_publish_sources == ["microphone", "camera", "screen_share", "screen_share_audio"]


async def test_service_gets_user_and_agent_tokens_without_ownership_check(
    agent_svc: AgentSvc, chat: FakeConversationService
) -> None:
    user = await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(
            conversation_id="anything", user_id="carol", agent_id="a1", media=res.CALL_MEDIA_VIDEO
        ),
        metadata=SERVICE,
    )
    assert _verify().verify(user.token).identity == "carol"
    agent = await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(
            conversation_id="anything", agent_id="a1", participant_kind=res.PARTICIPANT_KIND_AGENT
        ),
        metadata=SERVICE,
    )
    claims = _verify().verify(agent.token)
    assert (claims.identity, claims.kind) == ("agent-a1", "agent")
    assert agent.participant_kind == res.PARTICIPANT_KIND_AGENT
    assert agent.agent_name == ""
    assert chat.calls == 0


@pytest.mark.parametrize(
    ("request_fields", "bad_fields"),
    [
        ({"conversation_id": "", "agent_id": "a1"}, ["conversation_id"]),
        ({"conversation_id": "bad id!", "agent_id": "a1"}, ["conversation_id"]),
        ({"conversation_id": "c" * 65, "agent_id": "a1"}, ["conversation_id"]),
        ({"conversation_id": "c-voice", "agent_id": ""}, ["agent_id"]),
        ({"conversation_id": "c-voice", "agent_id": "a/1"}, ["agent_id"]),
        ({"conversation_id": "c-voice", "agent_id": "a1", "user_id": "al ice"}, ["user_id"]),
        ({"conversation_id": "c-voice", "agent_id": "a1", "ttl": duration_pb2.Duration(seconds=59)}, ["ttl"]),
        (
            {"conversation_id": "c-voice", "agent_id": "a1", "ttl": duration_pb2.Duration(seconds=86401)},
            ["ttl"],
        ),
        (
            {"conversation_id": "c-voice", "agent_id": "a1", "ttl": duration_pb2.Duration(seconds=-60)},
            ["ttl"],
        ),
        ({"conversation_id": "c-voice", "agent_id": "a1", "media": 7}, ["media"]),
        ({"conversation_id": "c-voice", "agent_id": "a1", "participant_kind": 9}, ["participant_kind"]),
        ({"conversation_id": "c-voice", "agent_id": "a1", "display_name": "x" * 200}, ["display_name"]),
        ({"conversation_id": "", "agent_id": "", "ttl": duration_pb2.Duration(seconds=1)}, None),
    ],
)
async def test_bad_token_requests_name_the_field(
    agent_svc: AgentSvc, request_fields: dict[str, object], bad_fields: list[str] | None
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.GenerateToken(pb.GenerateTokenRequest(**request_fields), metadata=ALICE)  # type: ignore[arg-type]
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_FIELD"
    expected = bad_fields or ["conversation_id", "agent_id", "ttl"]
    assert sorted(error.fields) == sorted(expected)
    for name in expected:
        assert name in error.message


async def test_ttl_within_bounds_is_used(agent_svc: AgentSvc) -> None:
    reply = await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(
            conversation_id="c-voice", agent_id="a1", ttl=duration_pb2.Duration(seconds=120)
        ),
        metadata=ALICE,
    )
    assert abs(reply.expire_time.seconds - (time.time() + 120)) <= 5


async def test_service_must_name_the_user(agent_svc: AgentSvc) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.GenerateToken(
            pb.GenerateTokenRequest(conversation_id="c1", agent_id="a1"), metadata=SERVICE
        )
    assert rich_error(caught.value).fields == ["user_id"]


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"conversation_id": "c-voice", "agent_id": "a1", "user_id": "mallory"}, "USER_MISMATCH"),
        (
            {"conversation_id": "c-voice", "agent_id": "a1", "participant_kind": res.PARTICIPANT_KIND_AGENT},
            "AGENT_TOKEN_FORBIDDEN",
        ),
        ({"conversation_id": "c-bob", "agent_id": "a1"}, "CONVERSATION_NOT_OWNED"),
    ],
)
async def test_user_is_refused_tokens_that_are_not_theirs(
    agent_svc: AgentSvc, request_fields: dict[str, object], reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.GenerateToken(pb.GenerateTokenRequest(**request_fields), metadata=ALICE)  # type: ignore[arg-type]
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason)


async def test_unknown_and_ended_conversations(agent_svc: AgentSvc) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.GenerateToken(
            pb.GenerateTokenRequest(conversation_id="nope", agent_id="a1"), metadata=ALICE
        )
    assert rich_error(caught.value).code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.GenerateToken(
            pb.GenerateTokenRequest(conversation_id="c-ended", agent_id="a1"), metadata=ALICE
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONVERSATION_ENDED")


async def test_request_must_agree_with_the_conversation(agent_svc: AgentSvc) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.GenerateToken(
            pb.GenerateTokenRequest(conversation_id="c-voice", agent_id="other", media=res.CALL_MEDIA_VIDEO),
            metadata=ALICE,
        )
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(error.fields) == ["agent_id", "media"]


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "TOKEN_MISSING"),
        ((("authorization", "Basic abc"),), "TOKEN_MISSING"),
        (bearer(user_token("alice", ttl_seconds=-120)), "TOKEN_EXPIRED"),
        (bearer(auth.mint("a-forged-secret-that-is-long-enough-0123456789", "alice")), "TOKEN_INVALID"),
        (bearer("not-a-jwt"), "TOKEN_INVALID"),
    ],
)
async def test_bad_credentials_are_unauthenticated(
    agent_svc: AgentSvc, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    request = pb.GenerateTokenRequest(conversation_id="c-voice", agent_id="a1")
    for call in (
        agent_svc.livekit.GenerateToken(request, metadata=metadata),
        agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id="c-voice"), metadata=metadata),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)


# -- Rooms -----------------------------------------------------------------------------------------


async def test_create_room_is_idempotent_and_dispatches_once(
    agent_svc: AgentSvc, livekit: LiveKitStandIn
) -> None:
    first = await agent_svc.livekit.CreateRoom(
        pb.CreateRoomRequest(conversation_id="c-voice"), metadata=ALICE
    )
    second = await agent_svc.livekit.CreateRoom(
        pb.CreateRoomRequest(conversation_id="c-voice"), metadata=ALICE
    )
    assert (first.room_name, first.exists) == ("conversation:c-voice", False)
    assert (second.room_name, second.exists) == ("conversation:c-voice", True)
    assert first.sid == second.sid != ""
    dispatches = livekit.dispatches("conversation:c-voice")
    assert len(dispatches) == 1
    assert first.dispatch_id == second.dispatch_id == dispatches[0].id
    assert dispatches[0].agent_name == "syntera-voice"
    # The agent profile comes from the conversation chat_svc holds.
    assert json.loads(dispatches[0].metadata) == {"conversationId": "c-voice", "agentId": "a1"}


async def test_service_creates_room_with_default_agent(agent_svc: AgentSvc, livekit: LiveKitStandIn) -> None:
    await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id="svc1"), metadata=SERVICE)
    (dispatch,) = livekit.dispatches("conversation:svc1")
    assert json.loads(dispatch.metadata) == {"conversationId": "svc1", "agentId": "default"}


async def test_dispatch_agent_is_idempotent(agent_svc: AgentSvc, livekit: LiveKitStandIn) -> None:
    first = await agent_svc.livekit.DispatchAgent(
        pb.DispatchAgentRequest(conversation_id="c-voice"), metadata=ALICE
    )
    second = await agent_svc.livekit.DispatchAgent(
        pb.DispatchAgentRequest(conversation_id="c-voice"), metadata=ALICE
    )
    assert (first.already_dispatched, second.already_dispatched) == (False, True)
    assert first.dispatch_id == second.dispatch_id
    assert len(livekit.dispatches("conversation:c-voice")) == 1


async def test_list_participants_maps_livekit_participants(
    agent_svc: AgentSvc, livekit: LiveKitStandIn
) -> None:
    await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id="c-video"), metadata=ALICE)
    livekit.add_participant(
        "conversation:c-video",
        "alice",
        name="Alice",
        sources=("microphone", "camera", "screen_share"),
        joined_at=1_700_000_000,
    )
    livekit.add_participant("conversation:c-video", "agent-a1", kind="agent", state="joined")
    reply = await agent_svc.livekit.ListParticipants(
        pb.ListParticipantsRequest(conversation_id="c-video"), metadata=ALICE
    )
    by_identity = {p.identity: p for p in reply.participants}
    alice, agent = by_identity["alice"], by_identity["agent-a1"]
    assert (alice.name, alice.kind, alice.state) == (
        "Alice",
        res.PARTICIPANT_KIND_USER,
        res.PARTICIPANT_STATE_ACTIVE,
    )
    assert list(alice.published_sources) == [
        res.TRACK_SOURCE_MICROPHONE,
        res.TRACK_SOURCE_CAMERA,
        res.TRACK_SOURCE_SCREEN_SHARE,
    ]
    assert alice.join_time.seconds == 1_700_000_000
    assert (agent.kind, agent.state) == (res.PARTICIPANT_KIND_AGENT, res.PARTICIPANT_STATE_JOINED)
    assert list(agent.published_sources) == [res.TRACK_SOURCE_MICROPHONE]


async def test_list_participants_of_missing_room_is_not_found(agent_svc: AgentSvc) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.ListParticipants(
            pb.ListParticipantsRequest(conversation_id="c-voice"), metadata=ALICE
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "ROOM_NOT_FOUND")


async def test_empty_existing_room_lists_no_participants(agent_svc: AgentSvc) -> None:
    await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id="c-voice"), metadata=ALICE)
    reply = await agent_svc.livekit.ListParticipants(
        pb.ListParticipantsRequest(conversation_id="c-voice"), metadata=ALICE
    )
    assert list(reply.participants) == []


async def test_delete_room_is_idempotent(agent_svc: AgentSvc, livekit: LiveKitStandIn) -> None:
    await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id="c-voice"), metadata=ALICE)
    first = await agent_svc.livekit.DeleteRoom(
        pb.DeleteRoomRequest(conversation_id="c-voice"), metadata=ALICE
    )
    second = await agent_svc.livekit.DeleteRoom(
        pb.DeleteRoomRequest(conversation_id="c-voice"), metadata=ALICE
    )
    assert (first.room_name, first.deleted, second.deleted) == ("conversation:c-voice", True, False)
    assert livekit.room_names() == []


@pytest.mark.parametrize("rpc", ["CreateRoom", "ListParticipants", "DispatchAgent", "DeleteRoom"])
async def test_room_calls_check_ownership_and_ids(
    agent_svc: AgentSvc, livekit: LiveKitStandIn, rpc: str
) -> None:
    requests = {
        "CreateRoom": pb.CreateRoomRequest,
        "ListParticipants": pb.ListParticipantsRequest,
        "DispatchAgent": pb.DispatchAgentRequest,
        "DeleteRoom": pb.DeleteRoomRequest,
    }
    method = getattr(agent_svc.livekit, rpc)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(requests[rpc](conversation_id="c-bob"), metadata=ALICE)
    assert rich_error(caught.value).code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(requests[rpc](conversation_id="no such!"), metadata=ALICE)
    error = rich_error(caught.value)
    assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["conversation_id"])
    assert livekit.room_names() == []


# -- LiveKit failures and secrecy --------------------------------------------------------------------


async def test_livekit_unreachable_is_unavailable(agent_svc: AgentSvc, livekit: LiveKitStandIn) -> None:
    await livekit.stop()  # the port is now closed
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id="c-voice"), metadata=ALICE)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "LIVEKIT_UNAVAILABLE")
    # Tokens need no LiveKit round trip: call setup keeps working.
    reply = await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(conversation_id="c-voice", agent_id="a1"), metadata=ALICE
    )
    assert reply.token


async def test_rejected_credentials_say_so_without_revealing_them(
    agent_svc: AgentSvc, livekit: LiveKitStandIn
) -> None:
    livekit._keys = {LIVEKIT_KEY: "the-server-now-has-another-secret-0123456789"}
    with structlog.testing.capture_logs() as logs:
        for call in (
            agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id="c-voice"), metadata=ALICE),
            agent_svc.livekit.DeleteRoom(pb.DeleteRoomRequest(conversation_id="c-voice"), metadata=SERVICE),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            error = rich_error(caught.value)
            assert (error.code, error.reason) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "LIVEKIT_CREDENTIALS_REJECTED",
            )
            assert "credentials" in error.message
            for secret in (LIVEKIT_SECRET.encode(), LIVEKIT_KEY.encode()):
                assert secret not in error.raw
                assert secret.decode() not in error.message
    assert any(entry["event"] == "livekit rejected the api credentials" for entry in logs)
    assert LIVEKIT_SECRET not in repr(logs)


async def test_secret_never_in_logs_or_responses(agent_svc: AgentSvc, livekit: LiveKitStandIn) -> None:
    with structlog.testing.capture_logs() as logs:
        token = await agent_svc.livekit.GenerateToken(
            pb.GenerateTokenRequest(conversation_id="c-voice", agent_id="a1"), metadata=ALICE
        )
        created = await agent_svc.livekit.CreateRoom(
            pb.CreateRoomRequest(conversation_id="c-voice"), metadata=ALICE
        )
        livekit.add_participant("conversation:c-voice", "alice")
        listed = await agent_svc.livekit.ListParticipants(
            pb.ListParticipantsRequest(conversation_id="c-voice"), metadata=ALICE
        )
        deleted = await agent_svc.livekit.DeleteRoom(
            pb.DeleteRoomRequest(conversation_id="c-voice"), metadata=ALICE
        )
    for reply in (token, created, listed, deleted):
        assert LIVEKIT_SECRET.encode() not in reply.SerializeToString()
    assert logs, "the calls should have logged"
    text = repr(logs)
    assert LIVEKIT_SECRET not in text
    assert token.token not in text  # tokens are credentials too


# -- Ownership source of truth ---------------------------------------------------------------------


async def test_chat_unreachable_is_unavailable_for_users_only(
    agent_svc: AgentSvc, chat_server: RunningServer
) -> None:
    await chat_server.stop(0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.GenerateToken(
            pb.GenerateTokenRequest(conversation_id="c-voice", agent_id="a1"), metadata=ALICE
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "CONVERSATION_SERVICE_UNAVAILABLE")
    # Services are trusted and never wait on chat_svc.
    reply = await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(conversation_id="c-voice", user_id="alice", agent_id="a1"), metadata=SERVICE
    )
    assert reply.identity == "alice"


async def test_forwards_the_users_own_token_to_chat(
    agent_svc: AgentSvc, chat: FakeConversationService
) -> None:
    await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(conversation_id="c-voice", agent_id="a1"), metadata=ALICE
    )
    # The fake chat_svc authenticated the caller as alice from the forwarded bearer token,
    # so ownership was judged on the user's own credentials, not a service identity.
    assert chat.calls == 1
    assert chat.last_subject == "alice"


async def test_dev_mode_without_chat_does_not_check_ownership(
    store: Store, database_name: str, livekit: LiveKitStandIn
) -> None:
    settings = make_settings(
        SYNTERA_DEV_MODE=True,
        CHAT_SVC_ADDRESS="",
        LIVEKIT_URL=livekit.url,
        MONGODB_URI=store.uri,
        MONGODB_DATABASE=database_name,
    )
    with structlog.testing.capture_logs() as logs:
        server = await create_server(settings)
    try:
        assert any("ownership is NOT checked" in entry["event"] for entry in logs)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.LiveKitServiceStub(channel)
            reply = await stub.GenerateToken(
                pb.GenerateTokenRequest(conversation_id="anyone", agent_id="a1"), metadata=ALICE
            )
        assert reply.identity == "alice"
    finally:
        await server.stop(0)
