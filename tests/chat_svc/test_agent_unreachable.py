"""agent_svc down: call setup fails UNAVAILABLE, nothing is stored, the same request_id works later."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from devrun.ports import free_port
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import resources_pb2 as pb
from tests.chat_svc.calls import TIMEOUT, as_user, create
from tests.chat_svc.support import FakeAgentSvc, chat_in_process, running_fake_agent
from tests.conftest import Store

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
            created = None
            for _ in range(20):  # the channel reconnects with backoff once the port answers
                try:
                    created = await create(chat.stub, "alice", pb.CHANNEL_VOICE, request_id="call-1")
                    break
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    await asyncio.sleep(0.25)
            assert created is not None
            assert created.join_info.token
            again = await create(chat.stub, "alice", pb.CHANNEL_VOICE, request_id="call-1")
            assert again.conversation.conversation_id == created.conversation.conversation_id
