"""The gRPC face of ConversationService: validate → domain → map back. No rules live here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from chat_svc import mapping
from chat_svc.call_records import CallRecords
from chat_svc.conversations import Conversations, CreateInput
from chat_svc.ends import ConversationEnds, Ended, Idle, Opened, Reset
from chat_svc.messages import MessageLog
from chat_svc.records import Status
from chat_svc.replies import Replies
from chat_svc.transcripts import Transcripts
from chat_svc.watch import (
    CallChanged,
    CallStateChanged,
    ConversationCreated,
    ConversationEnded,
    KeepAlive,
    MessageChanged,
    Watchers,
)
from servicekit.context import current_principal
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class ConversationServicer(api_grpc.ConversationServiceServicer):
    """Maps requests onto the domain objects and their results back onto responses."""

    def __init__(
        self,
        conversations: Conversations,
        messages: MessageLog,
        transcripts: Transcripts,
        calls: CallRecords,
        watchers: Watchers,
        replies: Replies,
        ends: ConversationEnds,
    ) -> None:
        self._conversations = conversations
        self._messages = messages
        self._transcripts = transcripts
        self._calls = calls
        self._watchers = watchers
        self._replies = replies
        self._ends = ends

    async def CreateConversation(
        self, request: api.CreateConversationRequest, context: Context
    ) -> api.CreateConversationResponse:
        created = await self._conversations.create(
            current_principal(),
            CreateInput(
                agent_id=request.agent_id,
                channel=mapping.channel_from_pb(request.channel),
                title=request.title,
                request_id=request.request_id,
            ),
        )
        response = api.CreateConversationResponse(
            conversation=mapping.conversation_to_pb(created.conversation)
        )
        if created.join is not None:
            response.join_info.CopyFrom(mapping.join_to_pb(created.join))
        return response

    async def GetConversation(
        self, request: api.GetConversationRequest, context: Context
    ) -> api.GetConversationResponse:
        conversation = await self._conversations.get(current_principal(), request.conversation_id)
        return api.GetConversationResponse(conversation=mapping.conversation_to_pb(conversation))

    async def ListConversations(
        self, request: api.ListConversationsRequest, context: Context
    ) -> api.ListConversationsResponse:
        page, next_token = await self._conversations.list(
            current_principal(), request.page_size, request.page_token
        )
        return api.ListConversationsResponse(
            conversations=[mapping.conversation_to_pb(c) for c in page], next_page_token=next_token
        )

    async def EndConversation(
        self, request: api.EndConversationRequest, context: Context
    ) -> api.EndConversationResponse:
        conversation = await self._conversations.end(current_principal(), request.conversation_id)
        self._ends.announce(conversation.conversation_id)
        return api.EndConversationResponse(conversation=mapping.conversation_to_pb(conversation))

    async def SendMessage(self, request: api.SendMessageRequest, context: Context) -> api.SendMessageResponse:
        message = await self._messages.send(
            current_principal(), request.conversation_id, request.text, request.request_id
        )
        return api.SendMessageResponse(message=mapping.message_to_pb(message))

    async def RetryReply(self, request: api.RetryReplyRequest, context: Context) -> api.RetryReplyResponse:
        message = await self._replies.retry(current_principal(), request.conversation_id, request.message_id)
        return api.RetryReplyResponse(message=mapping.message_to_pb(message))

    async def ListMessages(
        self, request: api.ListMessagesRequest, context: Context
    ) -> api.ListMessagesResponse:
        page, next_token = await self._messages.list(
            current_principal(),
            request.conversation_id,
            request.page_size,
            request.page_token,
            request.after_seq,
        )
        return api.ListMessagesResponse(
            messages=[mapping.message_to_pb(m) for m in page], next_page_token=next_token
        )

    async def ReportTranscript(
        self, request: api.ReportTranscriptRequest, context: Context
    ) -> api.ReportTranscriptResponse:
        results = await self._transcripts.report(
            current_principal(),
            request.conversation_id,
            [mapping.segment_from_pb(s) for s in request.segments],
            dict(request.call_metadata),
        )
        return api.ReportTranscriptResponse(
            results=[
                api.SegmentResult(segment_id=r.segment_id, seq=r.seq, revision=r.revision, created=r.created)
                for r in results
            ]
        )

    async def RecordCall(self, request: api.RecordCallRequest, context: Context) -> api.RecordCallResponse:
        conversation, applied = await self._calls.record(
            current_principal(),
            request.conversation_id,
            mapping.call_from_pb(request.HasField("call"), request.call),
        )
        if conversation.status is Status.ENDED:
            self._ends.announce(conversation.conversation_id)
        return api.RecordCallResponse(conversation=mapping.conversation_to_pb(conversation), applied=applied)

    async def WatchConversation(
        self, request: api.WatchConversationRequest, context: Context
    ) -> AsyncIterator[api.WatchConversationResponse]:
        events = self._watchers.conversation(current_principal(), request.conversation_id, request.after_seq)
        # Closed here, not whenever it is collected: it holds the user's place among their watches.
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, MessageChanged):
                    yield api.WatchConversationResponse(message=mapping.message_to_pb(event.message))
                elif isinstance(event, ConversationEnded):
                    yield api.WatchConversationResponse(
                        conversation_ended=api.ConversationEnded(
                            conversation=mapping.conversation_to_pb(event.conversation)
                        )
                    )
                elif isinstance(event, KeepAlive):
                    yield api.WatchConversationResponse(keep_alive=api.KeepAlive())
                elif isinstance(event, CallChanged):
                    yield api.WatchConversationResponse(call_updated=mapping.call_to_pb(event.call))

    async def WatchConversations(
        self, request: api.WatchConversationsRequest, context: Context
    ) -> AsyncIterator[api.WatchConversationsResponse]:
        async for event in self._watchers.user(current_principal()):
            if isinstance(event, ConversationCreated):
                yield api.WatchConversationsResponse(
                    conversation_created=mapping.conversation_to_pb(event.conversation)
                )
            elif isinstance(event, ConversationEnded):
                yield api.WatchConversationsResponse(
                    conversation_ended=mapping.conversation_to_pb(event.conversation)
                )
            elif isinstance(event, KeepAlive):
                yield api.WatchConversationsResponse(keep_alive=api.KeepAlive())
            elif isinstance(event, CallStateChanged):
                yield api.WatchConversationsResponse(
                    call_state_changed=mapping.conversation_to_pb(event.conversation)
                )

    async def WatchConversationEnds(
        self, request: api.WatchConversationEndsRequest, context: Context
    ) -> AsyncIterator[api.WatchConversationEndsResponse]:
        async for event in self._ends.stream(current_principal()):
            if isinstance(event, Ended):
                yield api.WatchConversationEndsResponse(conversation_ended=event.conversation_id)
            elif isinstance(event, Opened):
                yield api.WatchConversationEndsResponse(opened=api.KeepAlive())
            elif isinstance(event, Reset):
                yield api.WatchConversationEndsResponse(reset=api.KeepAlive())
            elif isinstance(event, Idle):
                yield api.WatchConversationEndsResponse(keep_alive=api.KeepAlive())
