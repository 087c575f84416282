"""Ownership on every RPC, service-only ReportTranscript, and UNAUTHENTICATED without a valid JWT."""

from __future__ import annotations

import grpc
import jwt
import pytest

from servicekit import auth
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import resources_pb2 as pb
from tests.chat_svc.calls import TIMEOUT, as_service, as_user, create, segment
from tests.chat_svc.support import ChatInProcess
from tests.support.identity import bearer, user_token

pytestmark = pytest.mark.grpc


async def _first_event(call: grpc.aio.UnaryStreamCall) -> object:  # type: ignore[type-arg]
    async for event in call:
        return event
    return None


async def test_cross_user_access_is_refused(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    mallory = as_user("mallory")
    attempts = {
        "get": chat.stub.GetConversation(
            api.GetConversationRequest(conversation_id=conversation_id), metadata=mallory, timeout=TIMEOUT
        ),
        "end": chat.stub.EndConversation(
            api.EndConversationRequest(conversation_id=conversation_id), metadata=mallory, timeout=TIMEOUT
        ),
        "send": chat.stub.SendMessage(
            api.SendMessageRequest(conversation_id=conversation_id, text="hi"),
            metadata=mallory,
            timeout=TIMEOUT,
        ),
        "messages": chat.stub.ListMessages(
            api.ListMessagesRequest(conversation_id=conversation_id), metadata=mallory, timeout=TIMEOUT
        ),
        "watch": _first_event(
            chat.stub.WatchConversation(
                api.WatchConversationRequest(conversation_id=conversation_id),
                metadata=mallory,
                timeout=TIMEOUT,
            )
        ),
    }
    for name, attempt in attempts.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await attempt
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
    listed = await chat.stub.ListConversations(
        api.ListConversationsRequest(), metadata=mallory, timeout=TIMEOUT
    )
    assert list(listed.conversations) == []
    # Unknown ids are NOT_FOUND, and the owner's conversation is untouched.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.stub.GetConversation(
            api.GetConversationRequest(conversation_id="does-not-exist"), metadata=mallory, timeout=TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    got = await chat.stub.GetConversation(
        api.GetConversationRequest(conversation_id=conversation_id),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    assert got.conversation.status == pb.CONVERSATION_STATUS_ACTIVE
    assert got.conversation.last_seq == 0


async def test_services_may_read_any_conversation(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice")).conversation.conversation_id
    got = await chat.stub.GetConversation(
        api.GetConversationRequest(conversation_id=conversation_id), metadata=as_service(), timeout=TIMEOUT
    )
    assert got.conversation.user_id == "alice"


async def test_user_token_cannot_report_transcripts(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.stub.ReportTranscript(
            api.ReportTranscriptRequest(conversation_id=conversation_id, segments=[segment("s", "x")]),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        bearer(user_token("alice", ttl_seconds=-120)),
        bearer(auth.mint("a-different-secret-that-is-long-enough-000", "alice")),
        bearer(jwt.encode({"sub": "alice"}, "x" * 40, algorithm="HS256")),
        (("authorization", "Basic abc"),),
    ],
    ids=["none", "expired", "forged", "no-exp", "not-bearer"],
)
async def test_without_a_valid_jwt_every_rpc_is_unauthenticated(
    chat: ChatInProcess, metadata: tuple[tuple[str, str], ...]
) -> None:
    unary = [
        chat.stub.CreateConversation(
            api.CreateConversationRequest(agent_id="default", channel=pb.CHANNEL_TEXT),
            metadata=metadata,
            timeout=TIMEOUT,
        ),
        chat.stub.GetConversation(
            api.GetConversationRequest(conversation_id="x"), metadata=metadata, timeout=TIMEOUT
        ),
        chat.stub.ListConversations(api.ListConversationsRequest(), metadata=metadata, timeout=TIMEOUT),
        chat.stub.EndConversation(
            api.EndConversationRequest(conversation_id="x"), metadata=metadata, timeout=TIMEOUT
        ),
        chat.stub.SendMessage(
            api.SendMessageRequest(conversation_id="x", text="t"), metadata=metadata, timeout=TIMEOUT
        ),
        chat.stub.ListMessages(
            api.ListMessagesRequest(conversation_id="x"), metadata=metadata, timeout=TIMEOUT
        ),
        chat.stub.ReportTranscript(
            api.ReportTranscriptRequest(conversation_id="x"), metadata=metadata, timeout=TIMEOUT
        ),
        _first_event(
            chat.stub.WatchConversation(
                api.WatchConversationRequest(conversation_id="x"), metadata=metadata, timeout=TIMEOUT
            )
        ),
        _first_event(
            chat.stub.WatchConversations(api.WatchConversationsRequest(), metadata=metadata, timeout=TIMEOUT)
        ),
    ]
    for attempt in unary:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await attempt
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
