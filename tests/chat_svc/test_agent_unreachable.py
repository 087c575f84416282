"""agent_svc down: call setup fails UNAVAILABLE, nothing is stored, the same request_id works later."""

from __future__ import annotations

import grpc
import pytest

from devrun.ports import free_port
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import resources_pb2 as pb
from tests.chat_svc.calls import TIMEOUT, as_user, create
from tests.chat_svc.support import FakeAgentSvc, chat_in_process, running_fake_agent
from tests.conftest import Store
from tests.support.eventually import eventually

pytestmark = pytest.mark.grpc


async def test_unreachable_agent_svc_then_retry(store: Store, database_name: str) -> None:
    agent_port = free_port()  # nothing listens here yet
    async with chat_in_process(store.uri, database_name, f"127.0.0.1:{agent_port}") as chat:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(chat.stub, "alice", pb.CHANNEL_VOICE, request_id="call-1")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        listed = await chat.stub.ListConversations(
            api.ListConversationsRequest(), metadata=as_user("alice"), timeout=TIMEOUT
        )
        assert list(listed.conversations) == []
        fake = FakeAgentSvc()
        async with running_fake_agent(fake, agent_port):

            async def created_once_agent_svc_answers() -> api.CreateConversationResponse:
                try:
                    return await create(chat.stub, "alice", pb.CHANNEL_VOICE, request_id="call-1")
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    raise AssertionError("still UNAVAILABLE") from None

            # The channel reconnects with backoff once the port answers.
            created = await eventually(created_once_agent_svc_answers, within=5.0, interval=0.25)
            assert created.join_info.token
            again = await create(chat.stub, "alice", pb.CHANNEL_VOICE, request_id="call-1")
            assert again.conversation.conversation_id == created.conversation.conversation_id
