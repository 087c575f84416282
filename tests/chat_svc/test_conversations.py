"""CreateConversation, Get, List, End and SendMessage against a real store and an agent_svc stand-in."""

from __future__ import annotations

import grpc
import pytest

from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import resources_pb2 as pb
from tests.chat_svc.calls import TIMEOUT, as_user, create, reason, violations
from tests.chat_svc.support import AGENT_NAME, LIVEKIT_URL, ChatInProcess, FakeAgentSvc

pytestmark = pytest.mark.grpc


async def test_text_conversation_has_no_call(chat: ChatInProcess, fake_agent: FakeAgentSvc) -> None:
    created = await create(chat.stub, "alice")
    conversation = created.conversation
    assert conversation.status == pb.CONVERSATION_STATUS_ACTIVE
    assert conversation.user_id == "alice"
    assert conversation.channel == pb.CHANNEL_TEXT
    assert conversation.room_name == ""
    assert not created.HasField("join_info")
    assert fake_agent.token_requests == []
    assert fake_agent.callers == {"chat_svc"}


@pytest.mark.parametrize(("channel", "media"), [(pb.CHANNEL_VOICE, 1), (pb.CHANNEL_VIDEO, 2)])
async def test_call_returns_join_info(
    chat: ChatInProcess, fake_agent: FakeAgentSvc, channel: int, media: int
) -> None:
    created = await create(chat.stub, "alice", channel)
    conversation_id = created.conversation.conversation_id
    join = created.join_info
    assert join.room_name == f"conversation:{conversation_id}"
    assert join.url == LIVEKIT_URL
    assert join.identity == "alice"
    assert join.token.startswith("lk-token-")
    assert created.conversation.room_name == join.room_name
    assert created.conversation.metadata["agent_name"] == AGENT_NAME
    (asked,) = fake_agent.token_requests
    assert (asked.user_id, asked.agent_id, asked.media) == ("alice", "default", media)


async def test_create_is_idempotent_on_request_id(chat: ChatInProcess, fake_agent: FakeAgentSvc) -> None:
    first = await create(chat.stub, "alice", pb.CHANNEL_VOICE, request_id="req-1")
    again = await create(chat.stub, "alice", pb.CHANNEL_VOICE, request_id="req-1")
    other_user = await create(chat.stub, "bob", pb.CHANNEL_VOICE, request_id="req-1")
    assert again.conversation.conversation_id == first.conversation.conversation_id
    assert again.join_info.token  # a fresh join token for the same room
    assert other_user.conversation.conversation_id != first.conversation.conversation_id
    listed = await chat.stub.ListConversations(
        api.ListConversationsRequest(), metadata=as_user("alice"), timeout=TIMEOUT
    )
    assert len(listed.conversations) == 1


async def test_unknown_agent_is_not_found_and_nothing_stored(chat: ChatInProcess) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(chat.stub, "alice", agent_id="nobody")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await chat.stub.ListConversations(
        api.ListConversationsRequest(), metadata=as_user("alice"), timeout=TIMEOUT
    )
    assert list(listed.conversations) == []


async def test_get_derives_last_seq(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice")).conversation.conversation_id
    for text in ("one", "two"):
        await chat.stub.SendMessage(
            api.SendMessageRequest(conversation_id=conversation_id, text=text),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
    got = await chat.stub.GetConversation(
        api.GetConversationRequest(conversation_id=conversation_id),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    assert got.conversation.last_seq == 2


async def test_list_pages_newest_first(chat: ChatInProcess) -> None:
    ids = [(await create(chat.stub, "alice")).conversation.conversation_id for _ in range(5)]
    await create(chat.stub, "bob")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await chat.stub.ListConversations(
            api.ListConversationsRequest(page_size=2, page_token=token),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
        seen += [c.conversation_id for c in page.conversations]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_bad_page_token(chat: ChatInProcess) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.stub.ListConversations(
            api.ListConversationsRequest(page_token="garbage"), metadata=as_user("alice"), timeout=TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["page_token"]


async def test_end_is_idempotent_and_deletes_the_room(chat: ChatInProcess, fake_agent: FakeAgentSvc) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    request = api.EndConversationRequest(conversation_id=conversation_id)
    ended = await chat.stub.EndConversation(request, metadata=as_user("alice"), timeout=TIMEOUT)
    again = await chat.stub.EndConversation(request, metadata=as_user("alice"), timeout=TIMEOUT)
    assert ended.conversation.status == pb.CONVERSATION_STATUS_ENDED
    assert ended.conversation.HasField("end_time")
    assert ended.conversation.HasField("duration")
    assert again.conversation.end_time == ended.conversation.end_time
    assert fake_agent.deleted_rooms == [conversation_id]
    assert ended.conversation.metadata["room_cleanup"] == "done"


async def test_end_succeeds_when_room_cleanup_fails(chat: ChatInProcess, fake_agent: FakeAgentSvc) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VIDEO)).conversation.conversation_id
    fake_agent.delete_fails = True
    ended = await chat.stub.EndConversation(
        api.EndConversationRequest(conversation_id=conversation_id),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    assert ended.conversation.status == pb.CONVERSATION_STATUS_ENDED
    assert ended.conversation.metadata["room_cleanup"] == "pending"


async def test_send_message_rules(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
    send = api.SendMessageRequest(conversation_id=conversation_id, text="hello", request_id="m-1")
    first = await chat.stub.SendMessage(send, metadata=as_user("alice"), timeout=TIMEOUT)
    repeat = await chat.stub.SendMessage(send, metadata=as_user("alice"), timeout=TIMEOUT)
    assert first.message == repeat.message
    assert (first.message.seq, first.message.role, first.message.final) == (1, pb.ROLE_USER, True)
    for text, field in (("   ", "text"), ("x" * 4001, "text"), ("", "text")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await chat.stub.SendMessage(
                api.SendMessageRequest(conversation_id=conversation_id, text=text),
                metadata=as_user("alice"),
                timeout=TIMEOUT,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(caught.value) == [field]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.stub.SendMessage(
            api.SendMessageRequest(conversation_id="unknown", text="hi"),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await chat.stub.EndConversation(
        api.EndConversationRequest(conversation_id=conversation_id),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.stub.SendMessage(
            api.SendMessageRequest(conversation_id=conversation_id, text="late"),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(caught.value) == "CONVERSATION_ENDED"


async def test_list_messages_pages_by_seq(chat: ChatInProcess) -> None:
    conversation_id = (await create(chat.stub, "alice")).conversation.conversation_id
    for n in range(5):
        await chat.stub.SendMessage(
            api.SendMessageRequest(conversation_id=conversation_id, text=f"m{n}"),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
    first = await chat.stub.ListMessages(
        api.ListMessagesRequest(conversation_id=conversation_id, page_size=3, after_seq=1),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    assert [m.seq for m in first.messages] == [2, 3, 4]
    rest = await chat.stub.ListMessages(
        api.ListMessagesRequest(
            conversation_id=conversation_id, page_size=3, page_token=first.next_page_token
        ),
        metadata=as_user("alice"),
        timeout=TIMEOUT,
    )
    assert [m.seq for m in rest.messages] == [5]
    assert rest.next_page_token == ""
