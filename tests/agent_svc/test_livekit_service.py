"""LiveKitService over real gRPC against the real LiveKit server and a fake chat_svc.

Tokens are joined with the rtc package, so the server itself shows what their grants allow; rooms,
participants and dispatches are read back from the server's own API. The session's server is shared:
every test uses conversation ids of its own (the `cids` fixture). Tests that stop, pause or rekey a
server start one of their own. Only faults the real server cannot produce on demand use the stand-in
(tests/support/livekit_standin.py).
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import structlog
from google.protobuf import duration_pb2
from livekit import api, rtc
from livekit.api import TokenVerifier
from livekit.protocol import models as lk_models

from agent_svc.app import create_server
from devrun.livekit_server import LiveKitKeys
from servicekit import auth
from servicekit.server import RunningServer
from syntera.conversation.v1 import resources_pb2 as conv_res
from syntera.livekit.v1 import livekit_service_pb2 as pb
from syntera.livekit.v1 import livekit_service_pb2_grpc as pb_grpc
from syntera.livekit.v1 import resources_pb2 as res
from tests.agent_svc.conftest import (
    ROOM_EMPTY_TIMEOUT_SECONDS,
    ROOM_MAX_PARTICIPANTS,
    AgentSvc,
    start_agent_svc,
)
from tests.agent_svc.livekit_support import (
    LiveKitServer,
    PublishTrackError,
    joined,
    participants_by_identity,
    room_info,
    start_livekit,
    wait_for_tracks,
)
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
from tests.support.livekit_standin import FAULTS, LiveKitStandIn

pytestmark = pytest.mark.grpc

ALICE = bearer(user_token("alice"))
SERVICE = bearer(service_token("chat_svc"))
AGENT_NAME = "syntera-voice"


@dataclass(frozen=True)
class Conversations:
    """This test's conversations in the fake chat_svc (ids unique to the test, so are their rooms)."""

    voice: str
    video: str
    bob: str
    ended: str

    @staticmethod
    def room(conversation_id: str) -> str:
        return f"conversation:{conversation_id}"


@pytest.fixture
def cids(chat: FakeConversationService) -> Conversations:
    tag = uuid.uuid4().hex[:12]
    ids = Conversations(f"voice-{tag}", f"video-{tag}", f"bob-{tag}", f"ended-{tag}")
    chat.conversations[ids.voice] = StoredConversation("alice", "a1")
    chat.conversations[ids.video] = StoredConversation("alice", "a1", channel=conv_res.CHANNEL_VIDEO)
    chat.conversations[ids.bob] = StoredConversation("bob", "a1")
    chat.conversations[ids.ended] = StoredConversation(
        "alice", "a1", status=conv_res.CONVERSATION_STATUS_ENDED
    )
    return ids


@pytest.fixture
async def server_api(livekit: LiveKitServer) -> AsyncIterator[api.LiveKitAPI]:
    """The session server's own API, to see what it did (with its keys, not through agent_svc)."""
    client = livekit.api()
    yield client
    await client.aclose()


def _verify() -> TokenVerifier:
    return TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET)


async def _token(
    agent_svc: AgentSvc, conversation_id: str, metadata: tuple[tuple[str, str], ...] = ALICE, **fields: object
) -> pb.GenerateTokenResponse:
    request = pb.GenerateTokenRequest(conversation_id=conversation_id, agent_id="a1", **fields)  # type: ignore[arg-type]
    reply: pb.GenerateTokenResponse = await agent_svc.livekit.GenerateToken(request, metadata=metadata)
    return reply


async def _syntera_dispatches(server_api: api.LiveKitAPI, room: str) -> list[lk_models.AgentDispatch]:
    """The room's dispatches of our agent, as the server lists them.

    The server also lists an automatic dispatch with an empty agent name in every room (for workers
    registered without a name); ours is the one named after the voice agent.
    """
    dispatches = await server_api.agent_dispatch.list_dispatch(room)
    assert {d.agent_name for d in dispatches} <= {"", AGENT_NAME}, dispatches
    return [d for d in dispatches if d.agent_name == AGENT_NAME]


# -- GenerateToken ---------------------------------------------------------------------------------


async def test_user_gets_voice_token_for_own_conversation(
    agent_svc: AgentSvc, livekit: LiveKitServer, cids: Conversations
) -> None:
    reply = await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(conversation_id=cids.voice, user_id="alice", agent_id="a1"), metadata=ALICE
    )
    claims = _verify().verify(reply.token)
    assert claims.identity == "alice" == reply.identity
    assert reply.room_name == cids.room(cids.voice)
    assert reply.url == livekit.url
    assert reply.participant_kind == res.PARTICIPANT_KIND_USER
    assert reply.agent_name == AGENT_NAME
    assert claims.video is not None
    assert claims.video.can_publish_sources == ["microphone"]
    assert claims.room_config is not None
    assert json.loads(claims.room_config.agents[0].metadata) == {
        "conversationId": cids.voice,
        "agentId": "a1",
    }
    assert abs(reply.expire_time.seconds - (time.time() + 3600)) <= 5


async def test_voice_token_joins_and_may_publish_only_the_microphone(
    agent_svc: AgentSvc, server_api: api.LiveKitAPI, cids: Conversations
) -> None:
    reply = await _token(agent_svc, cids.voice)
    room = cids.room(cids.voice)
    async with joined(reply.url, reply.token) as alice:
        assert (alice.identity, alice.room.name) == ("alice", room)
        microphone = await alice.publish_microphone()
        assert microphone.sid
        # The server read our grants from the token: microphone only.
        info = (await participants_by_identity(server_api, room))["alice"]
        assert info.kind == lk_models.ParticipantInfo.STANDARD
        assert list(info.permission.can_publish_sources) == [lk_models.TrackSource.MICROPHONE]
        # ... and holds to them: a camera is refused (the server never answers the publication).
        with pytest.raises(PublishTrackError):
            await alice.publish_camera()
        info = (await participants_by_identity(server_api, room))["alice"]
        assert [track.source for track in info.tracks] == [lk_models.TrackSource.MICROPHONE]
        assert alice.room.isconnected()


async def test_join_with_a_token_creates_the_room_with_our_policy_and_dispatches_once(
    agent_svc: AgentSvc, server_api: api.LiveKitAPI, cids: Conversations
) -> None:
    # No CreateRoom: the join creates the room from the token's room configuration.
    reply = await _token(agent_svc, cids.voice)
    room = cids.room(cids.voice)
    async with joined(reply.url, reply.token):
        info = await room_info(server_api, room)
        assert info is not None, "the join should have created the room"
        assert (info.empty_timeout, info.max_participants) == (
            ROOM_EMPTY_TIMEOUT_SECONDS,
            ROOM_MAX_PARTICIPANTS,
        )
        (token_dispatch,) = await _syntera_dispatches(server_api, room)
        assert json.loads(token_dispatch.metadata) == {"conversationId": cids.voice, "agentId": "a1"}
        # The token already dispatched the agent: DispatchAgent and CreateRoom add no second one.
        dispatched = await agent_svc.livekit.DispatchAgent(
            pb.DispatchAgentRequest(conversation_id=cids.voice), metadata=ALICE
        )
        created = await agent_svc.livekit.CreateRoom(
            pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE
        )
        assert (dispatched.already_dispatched, dispatched.dispatch_id) == (True, token_dispatch.id)
        assert (created.exists, created.sid, created.dispatch_id) == (True, info.sid, token_dispatch.id)
        assert [d.id for d in await _syntera_dispatches(server_api, room)] == [token_dispatch.id]


async def test_user_token_follows_the_conversation_channel(agent_svc: AgentSvc, cids: Conversations) -> None:
    # Empty user_id means the caller; media comes from chat_svc's conversation.
    reply = await agent_svc.livekit.GenerateToken(
        pb.GenerateTokenRequest(conversation_id=cids.video, agent_id="a1"), metadata=ALICE
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


async def test_ttl_within_bounds_is_used(agent_svc: AgentSvc, cids: Conversations) -> None:
    reply = await _token(agent_svc, cids.voice, ttl=duration_pb2.Duration(seconds=120))
    assert abs(reply.expire_time.seconds - (time.time() + 120)) <= 5


async def test_service_must_name_the_user(agent_svc: AgentSvc) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.GenerateToken(
            pb.GenerateTokenRequest(conversation_id="c1", agent_id="a1"), metadata=SERVICE
        )
    assert rich_error(caught.value).fields == ["user_id"]


@pytest.mark.parametrize(
    ("conversation", "request_fields", "reason"),
    [
        ("voice", {"user_id": "mallory"}, "USER_MISMATCH"),
        ("voice", {"participant_kind": res.PARTICIPANT_KIND_AGENT}, "AGENT_TOKEN_FORBIDDEN"),
        ("bob", {}, "CONVERSATION_NOT_OWNED"),
    ],
)
async def test_user_is_refused_tokens_that_are_not_theirs(
    agent_svc: AgentSvc,
    cids: Conversations,
    conversation: str,
    request_fields: dict[str, object],
    reason: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _token(agent_svc, getattr(cids, conversation), **request_fields)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason)


async def test_unknown_and_ended_conversations(agent_svc: AgentSvc, cids: Conversations) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _token(agent_svc, f"unknown-{cids.voice}")
    assert rich_error(caught.value).code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _token(agent_svc, cids.ended)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONVERSATION_ENDED")


async def test_request_must_agree_with_the_conversation(agent_svc: AgentSvc, cids: Conversations) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.GenerateToken(
            pb.GenerateTokenRequest(conversation_id=cids.voice, agent_id="other", media=res.CALL_MEDIA_VIDEO),
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


async def test_create_room_is_idempotent_honours_our_policy_and_dispatches_once(
    agent_svc: AgentSvc, server_api: api.LiveKitAPI, cids: Conversations
) -> None:
    room = cids.room(cids.voice)
    first = await agent_svc.livekit.CreateRoom(
        pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE
    )
    second = await agent_svc.livekit.CreateRoom(
        pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE
    )
    assert (first.room_name, first.exists) == (room, False)
    assert (second.room_name, second.exists) == (room, True)
    assert first.sid == second.sid != ""
    # The server keeps the room with the empty timeout and size limit agent_svc asked for.
    info = await room_info(server_api, room)
    assert info is not None
    assert info.sid == first.sid
    assert (info.empty_timeout, info.max_participants) == (ROOM_EMPTY_TIMEOUT_SECONDS, ROOM_MAX_PARTICIPANTS)
    (dispatch,) = await _syntera_dispatches(server_api, room)
    assert first.dispatch_id == second.dispatch_id == dispatch.id
    # The agent profile comes from the conversation chat_svc holds.
    assert json.loads(dispatch.metadata) == {"conversationId": cids.voice, "agentId": "a1"}


async def test_room_refuses_users_beyond_max_participants_but_not_agents(
    agent_svc: AgentSvc, server_api: api.LiveKitAPI, cids: Conversations
) -> None:
    await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE)
    alice = await _token(agent_svc, cids.voice)
    carol = await _token(agent_svc, cids.voice, SERVICE, user_id="carol")
    dave = await _token(agent_svc, cids.voice, SERVICE, user_id="dave")
    agent = await _token(agent_svc, cids.voice, SERVICE, participant_kind=res.PARTICIPANT_KIND_AGENT)
    assert ROOM_MAX_PARTICIPANTS == 2
    async with joined(alice.url, alice.token), joined(carol.url, carol.token):
        # LiveKit does not count agents against max_participants: the voice agent always gets in.
        async with joined(agent.url, agent.token):
            with pytest.raises(rtc.ConnectError):
                async with joined(dave.url, dave.token):
                    pass
            listed = await participants_by_identity(server_api, cids.room(cids.voice))
            assert sorted(listed) == ["agent-a1", "alice", "carol"]


async def test_service_creates_room_with_default_agent(
    agent_svc: AgentSvc, server_api: api.LiveKitAPI, cids: Conversations
) -> None:
    service_owned = f"svc-{cids.voice}"
    await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id=service_owned), metadata=SERVICE)
    (dispatch,) = await _syntera_dispatches(server_api, cids.room(service_owned))
    assert json.loads(dispatch.metadata) == {"conversationId": service_owned, "agentId": "default"}


async def test_dispatch_agent_creates_the_room_and_dispatches_once(
    agent_svc: AgentSvc, server_api: api.LiveKitAPI, cids: Conversations
) -> None:
    room = cids.room(cids.voice)
    first = await agent_svc.livekit.DispatchAgent(
        pb.DispatchAgentRequest(conversation_id=cids.voice), metadata=ALICE
    )
    second = await agent_svc.livekit.DispatchAgent(
        pb.DispatchAgentRequest(conversation_id=cids.voice), metadata=ALICE
    )
    assert (first.already_dispatched, second.already_dispatched) == (False, True)
    assert first.dispatch_id == second.dispatch_id
    assert [d.id for d in await _syntera_dispatches(server_api, room)] == [first.dispatch_id]
    # The room DispatchAgent needed was made with our policy, not the server's defaults.
    info = await room_info(server_api, room)
    assert info is not None
    assert (info.empty_timeout, info.max_participants) == (ROOM_EMPTY_TIMEOUT_SECONDS, ROOM_MAX_PARTICIPANTS)


async def test_list_participants_reports_users_and_agents_as_the_server_sees_them(
    agent_svc: AgentSvc, server_api: api.LiveKitAPI, cids: Conversations
) -> None:
    await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id=cids.video), metadata=ALICE)
    user = await _token(agent_svc, cids.video, display_name="Alice")
    agent = await _token(agent_svc, cids.video, SERVICE, participant_kind=res.PARTICIPANT_KIND_AGENT)
    before = time.time()
    async with joined(user.url, user.token) as alice, joined(agent.url, agent.token) as voice_agent:
        await alice.publish_microphone()
        await alice.publish_camera()  # a video call's token allows it
        await voice_agent.publish_microphone()
        mic, camera = lk_models.TrackSource.MICROPHONE, lk_models.TrackSource.CAMERA
        await wait_for_tracks(server_api, cids.room(cids.video), {"alice": {mic, camera}, "agent-a1": {mic}})
        reply = await agent_svc.livekit.ListParticipants(
            pb.ListParticipantsRequest(conversation_id=cids.video), metadata=ALICE
        )
    by_identity = {p.identity: p for p in reply.participants}
    assert sorted(by_identity) == ["agent-a1", "alice"]
    alice_view, agent_view = by_identity["alice"], by_identity["agent-a1"]
    assert (alice_view.name, alice_view.kind, alice_view.state) == (
        "Alice",
        res.PARTICIPANT_KIND_USER,
        res.PARTICIPANT_STATE_ACTIVE,
    )
    # In the order the server lists the tracks (no order is promised); each source once.
    assert sorted(alice_view.published_sources) == [res.TRACK_SOURCE_MICROPHONE, res.TRACK_SOURCE_CAMERA]
    # The server reports the agent's kind from the token agent_svc minted for it.
    assert (agent_view.kind, agent_view.state) == (res.PARTICIPANT_KIND_AGENT, res.PARTICIPANT_STATE_ACTIVE)
    assert list(agent_view.published_sources) == [res.TRACK_SOURCE_MICROPHONE]
    for view in (alice_view, agent_view):
        assert before - 2 <= view.join_time.ToMilliseconds() / 1000 <= time.time() + 2


async def test_list_participants_of_missing_room_is_not_found(
    agent_svc: AgentSvc, cids: Conversations
) -> None:
    # The real server lists an unknown room as empty; agent_svc tells "absent" from "empty".
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_svc.livekit.ListParticipants(
            pb.ListParticipantsRequest(conversation_id=cids.voice), metadata=ALICE
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "ROOM_NOT_FOUND")


async def test_empty_existing_room_lists_no_participants(agent_svc: AgentSvc, cids: Conversations) -> None:
    await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE)
    reply = await agent_svc.livekit.ListParticipants(
        pb.ListParticipantsRequest(conversation_id=cids.voice), metadata=ALICE
    )
    assert list(reply.participants) == []


async def test_delete_room_disconnects_everyone_and_is_idempotent(
    agent_svc: AgentSvc, server_api: api.LiveKitAPI, cids: Conversations
) -> None:
    room = cids.room(cids.voice)
    await agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE)
    user = await _token(agent_svc, cids.voice)
    agent = await _token(agent_svc, cids.voice, SERVICE, participant_kind=res.PARTICIPANT_KIND_AGENT)
    async with joined(user.url, user.token) as alice, joined(agent.url, agent.token) as voice_agent:
        await alice.publish_microphone()
        first = await agent_svc.livekit.DeleteRoom(
            pb.DeleteRoomRequest(conversation_id=cids.voice), metadata=ALICE
        )
        assert (first.room_name, first.deleted) == (room, True)
        assert await alice.wait_disconnected() == rtc.DisconnectReason.ROOM_DELETED
        assert await voice_agent.wait_disconnected() == rtc.DisconnectReason.ROOM_DELETED
    second = await agent_svc.livekit.DeleteRoom(
        pb.DeleteRoomRequest(conversation_id=cids.voice), metadata=ALICE
    )
    assert (second.room_name, second.deleted) == (room, False)
    assert await room_info(server_api, room) is None


@pytest.mark.parametrize("rpc", ["CreateRoom", "ListParticipants", "DispatchAgent", "DeleteRoom"])
async def test_room_calls_check_ownership_and_ids(
    agent_svc: AgentSvc, server_api: api.LiveKitAPI, cids: Conversations, rpc: str
) -> None:
    requests = {
        "CreateRoom": pb.CreateRoomRequest,
        "ListParticipants": pb.ListParticipantsRequest,
        "DispatchAgent": pb.DispatchAgentRequest,
        "DeleteRoom": pb.DeleteRoomRequest,
    }
    method = getattr(agent_svc.livekit, rpc)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(requests[rpc](conversation_id=cids.bob), metadata=ALICE)
    assert rich_error(caught.value).code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(requests[rpc](conversation_id="no such!"), metadata=ALICE)
    error = rich_error(caught.value)
    assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["conversation_id"])
    assert await room_info(server_api, cids.room(cids.bob)) is None


# -- LiveKit failures and secrecy --------------------------------------------------------------------


@pytest.fixture
def own_livekit(tmp_path: Path) -> Iterator[LiveKitServer]:
    """A LiveKit server of the test's own, to stop or pause (same keys as the session's)."""
    server = start_livekit(tmp_path / "own-livekit", LiveKitKeys(LIVEKIT_KEY, LIVEKIT_SECRET))
    yield server
    server.stop()


async def test_livekit_down_is_unavailable(
    store: Store,
    database_name: str,
    chat_server: RunningServer,
    own_livekit: LiveKitServer,
    cids: Conversations,
) -> None:
    agent_svc = await start_agent_svc(store, database_name, chat_server, own_livekit.url)
    try:
        created = await agent_svc.livekit.CreateRoom(
            pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE
        )
        assert created.sid
        own_livekit.stop()  # the port is now closed
        for call in (
            agent_svc.livekit.CreateRoom(pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE),
            agent_svc.livekit.ListParticipants(
                pb.ListParticipantsRequest(conversation_id=cids.voice), metadata=ALICE
            ),
            agent_svc.livekit.DispatchAgent(
                pb.DispatchAgentRequest(conversation_id=cids.voice), metadata=ALICE
            ),
            agent_svc.livekit.DeleteRoom(pb.DeleteRoomRequest(conversation_id=cids.voice), metadata=ALICE),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            error = rich_error(caught.value)
            assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "LIVEKIT_UNAVAILABLE")
        # Tokens need no LiveKit round trip: call setup keeps working.
        reply = await _token(agent_svc, cids.voice)
        assert reply.token
    finally:
        await agent_svc.close()


async def test_hung_livekit_is_unavailable_within_the_api_timeout_and_recovers(
    store: Store,
    database_name: str,
    chat_server: RunningServer,
    own_livekit: LiveKitServer,
    cids: Conversations,
) -> None:
    timeout = 1.0
    agent_svc = await start_agent_svc(
        store, database_name, chat_server, own_livekit.url, LIVEKIT_API_TIMEOUT_SECONDS=timeout
    )
    try:
        # A stopped (SIGSTOP) server: the kernel still accepts connections, nothing answers.
        own_livekit.process.signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await agent_svc.livekit.CreateRoom(
                    pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE, timeout=10
                )
            elapsed = time.monotonic() - started
        finally:
            own_livekit.process.signal(signal.SIGCONT)
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "LIVEKIT_UNAVAILABLE")
        assert timeout <= elapsed < timeout + 1.5, f"answered after {elapsed:.2f}s"
        created = await agent_svc.livekit.CreateRoom(
            pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE, timeout=10
        )
        assert created.room_name == cids.room(cids.voice)
    finally:
        await agent_svc.close()


@pytest.mark.parametrize(
    "keys",
    [
        LiveKitKeys("APIunknownkey", LIVEKIT_SECRET),
        LiveKitKeys(LIVEKIT_KEY, "the-server-knows-another-secret-0123456789"),
    ],
    ids=["unknown-key", "wrong-secret"],
)
async def test_rejected_credentials_say_so_without_revealing_them(
    store: Store,
    database_name: str,
    chat_server: RunningServer,
    livekit: LiveKitServer,
    cids: Conversations,
    keys: LiveKitKeys,
) -> None:
    agent_svc = await start_agent_svc(
        store,
        database_name,
        chat_server,
        livekit.url,
        LIVEKIT_API_KEY=keys.api_key,
        LIVEKIT_API_SECRET=keys.api_secret,
    )
    try:
        with structlog.testing.capture_logs() as logs:
            for call in (
                agent_svc.livekit.CreateRoom(
                    pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE
                ),
                agent_svc.livekit.DispatchAgent(
                    pb.DispatchAgentRequest(conversation_id=cids.voice), metadata=ALICE
                ),
                agent_svc.livekit.DeleteRoom(
                    pb.DeleteRoomRequest(conversation_id=cids.voice), metadata=SERVICE
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                error = rich_error(caught.value)
                assert (error.code, error.reason) == (
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "LIVEKIT_CREDENTIALS_REJECTED",
                )
                assert "credentials" in error.message
                for secret in (keys.api_secret.encode(), keys.api_key.encode()):
                    assert secret not in error.raw
                    assert secret.decode() not in error.message
    finally:
        await agent_svc.close()
    assert any(entry["event"] == "livekit rejected the api credentials" for entry in logs)
    assert keys.api_secret not in repr(logs)


@pytest.mark.parametrize(
    ("fault", "code", "reason"),
    [
        ("unavailable", grpc.StatusCode.UNAVAILABLE, "LIVEKIT_UNAVAILABLE"),
        ("internal", grpc.StatusCode.UNAVAILABLE, "LIVEKIT_UNAVAILABLE"),
        ("resource_exhausted", grpc.StatusCode.UNAVAILABLE, "LIVEKIT_UNAVAILABLE"),
        ("proxy_error_page", grpc.StatusCode.UNAVAILABLE, "LIVEKIT_UNAVAILABLE"),
        ("invalid_argument", grpc.StatusCode.INTERNAL, "LIVEKIT_REQUEST_REJECTED"),
    ],
)
async def test_livekit_failures_are_mapped(
    store: Store,
    database_name: str,
    chat_server: RunningServer,
    cids: Conversations,
    fault: str,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    # Faults the real server does not produce on demand: the stand-in answers every call with one.
    async with LiveKitStandIn(LIVEKIT_KEY, LIVEKIT_SECRET, FAULTS[fault]) as standin:
        # No reconciliation: its own ListRooms would be counted below.
        agent_svc = await start_agent_svc(
            store, database_name, chat_server, standin.url, CALL_RECONCILE_SECONDS=0
        )
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await agent_svc.livekit.CreateRoom(
                    pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE
                )
        finally:
            await agent_svc.close()
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (code, reason)
    assert standin.calls == ["RoomService/ListRooms"]  # the first call failed, and only once
    assert LIVEKIT_SECRET.encode() not in error.raw


async def test_secret_never_in_logs_or_responses(agent_svc: AgentSvc, cids: Conversations) -> None:
    with structlog.testing.capture_logs() as logs:
        token = await _token(agent_svc, cids.voice)
        created = await agent_svc.livekit.CreateRoom(
            pb.CreateRoomRequest(conversation_id=cids.voice), metadata=ALICE
        )
        async with joined(token.url, token.token):
            listed = await agent_svc.livekit.ListParticipants(
                pb.ListParticipantsRequest(conversation_id=cids.voice), metadata=ALICE
            )
            deleted = await agent_svc.livekit.DeleteRoom(
                pb.DeleteRoomRequest(conversation_id=cids.voice), metadata=ALICE
            )
    assert [p.identity for p in listed.participants] == ["alice"]
    assert deleted.deleted
    for reply in (token, created, listed, deleted):
        assert LIVEKIT_SECRET.encode() not in reply.SerializeToString()
    assert logs, "the calls should have logged"
    text = repr(logs)
    assert LIVEKIT_SECRET not in text
    assert token.token not in text  # tokens are credentials too


# -- Ownership source of truth ---------------------------------------------------------------------


async def test_chat_unreachable_is_unavailable_for_users_only(
    agent_svc: AgentSvc, chat_server: RunningServer, cids: Conversations
) -> None:
    await chat_server.stop(0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _token(agent_svc, cids.voice)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "CONVERSATION_SERVICE_UNAVAILABLE")
    # Services are trusted and never wait on chat_svc.
    reply = await _token(agent_svc, cids.voice, SERVICE, user_id="alice")
    assert reply.identity == "alice"


async def test_forwards_the_users_own_token_to_chat(
    agent_svc: AgentSvc, chat: FakeConversationService, cids: Conversations
) -> None:
    await _token(agent_svc, cids.voice)
    # The fake chat_svc authenticated the caller as alice from the forwarded bearer token,
    # so ownership was judged on the user's own credentials, not a service identity.
    assert chat.calls == 1
    assert chat.last_subject == "alice"


async def test_dev_mode_without_chat_does_not_check_ownership(
    store: Store, database_name: str, livekit: LiveKitServer
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
