"""chat_svc as real processes on the embedded store: replicas, graceful stop, and the fault test."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as pb
from tests.chat_svc.calls import TIMEOUT, as_service, as_user, create, segment
from tests.chat_svc.processes import address, chat_process, wait_serving
from tests.chat_svc.support import FakeAgentSvc, running_fake_agent
from tests.conftest import Store
from tests.support.eventually import eventually

pytestmark = pytest.mark.mesh


@pytest.fixture
async def agent_address() -> AsyncIterator[str]:
    async with running_fake_agent(FakeAgentSvc()) as port:
        yield f"127.0.0.1:{port}"


class ResumingWatcher:
    """Watches a conversation through reconnects, resuming by the documented rule."""

    def __init__(self, target: str, conversation_id: str) -> None:
        self.target = target
        self.conversation_id = conversation_id
        self.latest: dict[int, pb.Message] = {}
        self.final_deliveries: Counter[int] = Counter()
        self.reconnects = 0
        self.task = asyncio.create_task(self._run())

    def resume_point(self) -> int:
        interim = [seq for seq, m in self.latest.items() if not m.final]
        return min(interim) - 1 if interim else max(self.latest, default=0)

    async def _run(self) -> None:
        while True:
            try:
                async with grpc.aio.insecure_channel(self.target) as channel:
                    stub = api_grpc.ConversationServiceStub(channel)
                    call = stub.WatchConversation(
                        api.WatchConversationRequest(
                            conversation_id=self.conversation_id, after_seq=self.resume_point()
                        ),
                        metadata=as_user("alice"),
                    )
                    async for event in call:
                        if event.WhichOneof("event") == "message":
                            message = event.message
                            self.latest[message.seq] = message
                            if message.final:
                                self.final_deliveries[message.seq] += 1
            except grpc.aio.AioRpcError:
                self.reconnects += 1
                await asyncio.sleep(0.2)

    def finals_in_order(self) -> list[str]:
        return [self.latest[s].segment_id for s in sorted(self.latest) if self.latest[s].final]


async def _report_with_retries(target: str, conversation_id: str, *segments: pb.TranscriptSegment) -> None:
    while True:
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                await api_grpc.ConversationServiceStub(channel).ReportTranscript(
                    api.ReportTranscriptRequest(conversation_id=conversation_id, segments=list(segments)),
                    metadata=as_service(),
                    timeout=3,
                )
            return
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise  # only "try again" codes may come back during the faults
            await asyncio.sleep(0.1)


async def test_watcher_on_replica_a_sees_reports_to_replica_b(
    store: Store, database_name: str, agent_address: str, tmp_path: Path
) -> None:
    replicas = [
        chat_process(tmp_path, n, store.uri, database_name, agent_address).start() for n in ("a", "b")
    ]
    try:
        for replica in replicas:
            await wait_serving(replica)
        a, b = (address(r) for r in replicas)
        async with grpc.aio.insecure_channel(a) as channel:
            conversation_id = (
                await create(api_grpc.ConversationServiceStub(channel), "alice", pb.CHANNEL_TEXT)
            ).conversation.conversation_id
        watcher = ResumingWatcher(a, conversation_id)
        await asyncio.sleep(0.5)
        for n in range(30):
            await _report_with_retries(b, conversation_id, segment(f"s{n}", f"part {n}", final=False))
            await _report_with_retries(b, conversation_id, segment(f"s{n}", f"turn {n}"))
        await eventually(lambda: len(watcher.finals_in_order()) >= 30, within=TIMEOUT, what="30 final turns")
        assert watcher.finals_in_order() == [f"s{n}" for n in range(30)]
        assert set(watcher.final_deliveries.values()) == {1}
        watcher.task.cancel()
        # SIGTERM drains: open watch streams end cleanly and the process exits 0.
        assert replicas[0].stop(timeout=10) == 0
    finally:
        for replica in replicas:
            replica.stop()


@pytest.mark.slow
async def test_fault_kill_chat_and_restart_store_loses_and_doubles_nothing(
    tmp_path: Path, agent_address: str
) -> None:
    own_store = Store(tmp_path / "store", tmp_path / "store.log")  # restarted here: not the shared one
    own_store.start()
    chat = chat_process(tmp_path, "chat", own_store.uri, "fault", agent_address).start()
    try:
        await wait_serving(chat)
        target = address(chat)
        async with grpc.aio.insecure_channel(target) as channel:
            conversation_id = (
                await create(api_grpc.ConversationServiceStub(channel), "alice", pb.CHANNEL_VOICE)
            ).conversation.conversation_id
        watcher = ResumingWatcher(target, conversation_id)
        total = 60

        async def reporter() -> None:
            for n in range(total):
                await _report_with_retries(target, conversation_id, segment(f"s{n}", f"par {n}", final=False))
                await _report_with_retries(target, conversation_id, segment(f"s{n}", f"turn {n}"))
                await asyncio.sleep(0.02)

        async def faults() -> None:
            await asyncio.sleep(0.6)
            chat.kill()  # SIGKILL: no draining, streams and calls cut mid-flight
            await asyncio.sleep(0.3)
            chat.start()
            await wait_serving(chat)
            await asyncio.sleep(0.6)
            await asyncio.to_thread(own_store.restart)

        await asyncio.gather(reporter(), faults())
        await eventually(
            lambda: len(watcher.finals_in_order()) >= total, within=30, what=f"{total} final turns"
        )
        async with grpc.aio.insecure_channel(target) as channel:
            listed = await api_grpc.ConversationServiceStub(channel).ListMessages(
                api.ListMessagesRequest(conversation_id=conversation_id, page_size=500),
                metadata=as_user("alice"),
                timeout=TIMEOUT,
            )
        assert [m.seq for m in listed.messages] == list(range(1, total + 1))
        assert [m.segment_id for m in listed.messages] == [f"s{n}" for n in range(total)]
        assert all(m.final and m.text == f"turn {n}" for n, m in enumerate(listed.messages))
        assert watcher.finals_in_order() == [f"s{n}" for n in range(total)]
        assert set(watcher.final_deliveries.values()) == {1}
        assert watcher.reconnects >= 1  # the kill really cut the stream
        watcher.task.cancel()
        await asyncio.gather(watcher.task, return_exceptions=True)
    finally:
        chat.stop()
        own_store.stop()
