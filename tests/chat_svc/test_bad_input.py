"""Bad input on every RPC, and a property test: random field values only ever get documented codes."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import resources_pb2 as pb
from tests.chat_svc.calls import TIMEOUT, as_service, as_user, create, violations
from tests.chat_svc.support import ChatInProcess

pytestmark = pytest.mark.grpc

# Every code an RPC documents for a caller's mistake; never UNKNOWN or INTERNAL.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (api.CreateConversationRequest(), ["agent_id", "channel"]),
        (
            api.CreateConversationRequest(agent_id="a b", channel=99, title="t" * 201, request_id="x" * 65),
            ["agent_id", "channel", "title", "request_id"],
        ),
        (api.GetConversationRequest(conversation_id=""), ["conversation_id"]),
        (api.GetConversationRequest(conversation_id="../etc"), ["conversation_id"]),
        (api.ListConversationsRequest(page_size=-1), ["page_size"]),
        (api.ListConversationsRequest(page_size=101), ["page_size"]),
        (api.EndConversationRequest(conversation_id="x" * 65), ["conversation_id"]),
        (
            api.SendMessageRequest(conversation_id="", text="", request_id="has space"),
            ["conversation_id", "text", "request_id"],
        ),
        (
            api.ListMessagesRequest(conversation_id="", page_size=501, after_seq=-1),
            ["conversation_id", "page_size", "after_seq"],
        ),
        (api.ReportTranscriptRequest(conversation_id="$bad"), ["conversation_id", "segments"]),
    ],
)
async def test_bad_fields_are_named(chat: ChatInProcess, request_: object, fields: list[str]) -> None:
    method = {
        api.CreateConversationRequest: chat.stub.CreateConversation,
        api.GetConversationRequest: chat.stub.GetConversation,
        api.ListConversationsRequest: chat.stub.ListConversations,
        api.EndConversationRequest: chat.stub.EndConversation,
        api.SendMessageRequest: chat.stub.SendMessage,
        api.ListMessagesRequest: chat.stub.ListMessages,
        api.ReportTranscriptRequest: chat.stub.ReportTranscript,
    }[type(request_)]
    metadata = as_service() if isinstance(request_, api.ReportTranscriptRequest) else as_user("alice")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(request_, metadata=metadata, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == fields


async def test_bad_watch_requests(chat: ChatInProcess) -> None:
    for request, field in (
        (api.WatchConversationRequest(conversation_id=""), "conversation_id"),
        (api.WatchConversationRequest(conversation_id="ok", after_seq=-5), "after_seq"),
    ):
        call = chat.stub.WatchConversation(request, metadata=as_user("alice"), timeout=TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(caught.value) == [field]


texts = st.text(max_size=80) | st.sampled_from(["", " ", "default", "x" * 65, "a/b", "conversation:1"])
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
timestamps = st.builds(
    lambda s, n: pb.TranscriptSegment().start_time.__class__(seconds=s, nanos=n),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
segments = st.builds(
    pb.TranscriptSegment,
    segment_id=texts,
    role=st.integers(min_value=-3, max_value=5),
    text=texts,
    final=st.booleans(),
    interrupted=st.booleans(),
    start_time=timestamps,
    end_time=timestamps,
    language=texts,
    confidence=st.floats(width=32, allow_nan=True, allow_infinity=True),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_random_field_values_get_only_documented_codes(
    chat: ChatInProcess, data: st.DataObject
) -> None:
    # One real conversation so that some random calls reach the store paths too.
    if not hasattr(chat, "known_id"):
        chat.known_id = (await create(chat.stub, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id  # type: ignore[attr-defined]
    conversation_ids = texts | st.just(chat.known_id)  # type: ignore[attr-defined]
    rpc = data.draw(st.sampled_from(["create", "get", "list", "end", "send", "messages", "report", "watch"]))
    user = as_user("alice")
    try:
        if rpc == "create":
            await chat.stub.CreateConversation(
                api.CreateConversationRequest(
                    agent_id=data.draw(texts),
                    channel=data.draw(ints),
                    title=data.draw(texts),
                    request_id=data.draw(texts),
                ),
                metadata=user,
                timeout=TIMEOUT,
            )
        elif rpc == "get":
            await chat.stub.GetConversation(
                api.GetConversationRequest(conversation_id=data.draw(conversation_ids)),
                metadata=user,
                timeout=TIMEOUT,
            )
        elif rpc == "list":
            await chat.stub.ListConversations(
                api.ListConversationsRequest(page_size=data.draw(ints), page_token=data.draw(texts)),
                metadata=user,
                timeout=TIMEOUT,
            )
        elif rpc == "end":
            await chat.stub.EndConversation(
                api.EndConversationRequest(conversation_id=data.draw(texts)), metadata=user, timeout=TIMEOUT
            )
        elif rpc == "send":
            await chat.stub.SendMessage(
                api.SendMessageRequest(
                    conversation_id=data.draw(conversation_ids),
                    text=data.draw(texts),
                    request_id=data.draw(texts),
                ),
                metadata=user,
                timeout=TIMEOUT,
            )
        elif rpc == "messages":
            await chat.stub.ListMessages(
                api.ListMessagesRequest(
                    conversation_id=data.draw(conversation_ids),
                    page_size=data.draw(ints),
                    page_token=data.draw(texts),
                    after_seq=data.draw(longs),
                ),
                metadata=user,
                timeout=TIMEOUT,
            )
        elif rpc == "report":
            await chat.stub.ReportTranscript(
                api.ReportTranscriptRequest(
                    conversation_id=data.draw(conversation_ids),
                    segments=data.draw(st.lists(segments, max_size=3)),
                ),
                metadata=as_service(),
                timeout=TIMEOUT,
            )
        else:
            call = chat.stub.WatchConversation(
                api.WatchConversationRequest(
                    conversation_id=data.draw(conversation_ids), after_seq=data.draw(longs)
                ),
                metadata=user,
                timeout=TIMEOUT,
            )
            async for _ in call:
                break  # the first event proves the stream opened; that is an OK outcome
            call.cancel()
    except grpc.aio.AioRpcError as error:
        code = error.code()
    else:
        code = grpc.StatusCode.OK
    assert code in DOCUMENTED, (rpc, code)
