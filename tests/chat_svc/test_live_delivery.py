"""Live delivery across replicas, and watchers that cannot stall the store.

Each replica hands its own writes to its watchers at once and the change feed brings every write
to every replica; watchers keep one copy of each revision. With several replicas nothing may be
lost or doubled, whichever replica takes the reports and whichever serves the watch.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from chat_svc.agent_client import AgentServiceClient
from chat_svc.app import create_server
from chat_svc.changefeed import Disruptions
from chat_svc.records import Channel, Conversation, Message, Role, Source, Status
from chat_svc.store import message_to_doc, open_client
from chat_svc.watch import _Delivered, _SharedReads, _Snapshot
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as pb
from tests.chat_svc.calls import TIMEOUT, _details, as_user, create, report, segment
from tests.chat_svc.processes import address, chat_process, wait_serving
from tests.chat_svc.support import make_settings
from tests.conftest import Store
from tests.support.identity import SERVICE_JWT_SECRET

pytestmark = pytest.mark.grpc


@asynccontextmanager
async def replica(
    store: Store, database: str, agent_port: int, **env: Any
) -> AsyncIterator[api_grpc.ConversationServiceStub]:
    """One chat_svc replica in process on the shared database, with its own change feeds."""
    agent_address = f"127.0.0.1:{agent_port}"
    settings = make_settings(
        MONGODB_URI=store.uri, MONGODB_DATABASE=database, AGENT_SVC_ADDRESS=agent_address, **env
    )
    disruptions = Disruptions()
    client = open_client(settings.mongodb_uri, settings.mongodb_timeout_seconds, [disruptions])
    calls = AgentServiceClient.connect(agent_address, SERVICE_JWT_SECRET, settings.agent_svc_timeout_seconds)
    server = await create_server(settings, client[database], calls, disruptions)
    await server.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield api_grpc.ConversationServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)
        await calls.close()
        await client.close()


class Stream:
    """One watch stream's messages, every copy kept so doubles show."""

    def __init__(self, stub: api_grpc.ConversationServiceStub, conversation_id: str, user: str) -> None:
        self.call = stub.WatchConversation(
            api.WatchConversationRequest(conversation_id=conversation_id), metadata=as_user(user)
        )
        self.messages: list[pb.Message] = []
        self.live = asyncio.Event()
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.call:
            kind = event.WhichOneof("event")
            if kind == "message":
                self.messages.append(event.message)
            elif kind == "keep_alive":
                self.live.set()

    async def settled(self) -> None:
        """Returns once the stream is live or has ended (refused, say)."""
        live = asyncio.ensure_future(self.live.wait())
        await asyncio.wait({live, self.task}, return_when=asyncio.FIRST_COMPLETED)
        live.cancel()

    def finals(self) -> dict[int, str]:
        return {m.seq: m.text for m in self.messages if m.final}

    def doubled(self) -> list[tuple[int, int]]:
        counts = Counter((m.seq, m.revision) for m in self.messages)
        return [key for key, count in counts.items() if count > 1]

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def _until(predicate: Any, limit_seconds: float = TIMEOUT) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - polls state another task fills in
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), limit_seconds)


async def test_two_replicas_deliver_every_revision_once_on_both_routes(
    store: Store, database_name: str, agent_port: int
) -> None:
    async with (
        replica(store, database_name, agent_port) as a,
        replica(store, database_name, agent_port) as b,
    ):
        conversation_id = (await create(a, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
        streams = [Stream(a, conversation_id, "alice"), Stream(b, conversation_id, "alice")]
        try:
            await asyncio.wait_for(asyncio.gather(*(s.live.wait() for s in streams)), TIMEOUT)

            async def speak(turn: int) -> None:
                # Interim on one replica, final on the other, turns alternating which goes first:
                # every watcher sees some revisions from its own replica and some from the other.
                first, second = (a, b) if turn % 2 else (b, a)
                await report(first, conversation_id, segment(f"s{turn}", f"tu{turn}", final=False))
                await report(second, conversation_id, segment(f"s{turn}", f"turn {turn}"))

            # Turns overlap, as two speakers' do, so seqs land on the two replicas out of order.
            await asyncio.gather(*(speak(turn) for turn in range(30)))
            expected = {f"turn {turn}" for turn in range(30)}
            for stream in streams:
                await _until(lambda s=stream: set(s.finals().values()) == expected)
            await asyncio.sleep(0.3)  # a double would arrive meanwhile
            for stream in streams:
                assert stream.doubled() == []
                assert sorted(stream.finals()) == list(range(1, 31))
                # Each turn at most twice (interim, final), never a revision older than one sent.
                per_seq: dict[int, list[int]] = {}
                for message in stream.messages:
                    per_seq.setdefault(message.seq, []).append(message.revision)
                assert all(revisions == sorted(revisions) for revisions in per_seq.values())
        finally:
            await asyncio.gather(*(s.close() for s in streams))


def _message(seq: int, revision: int = 1, final: bool = True) -> Message:
    return Message(
        message_id=f"m{seq}",
        conversation_id="c",
        seq=seq,
        revision=revision,
        role=Role.USER,
        source=Source.TRANSCRIPT,
        text="x",
        final=final,
        interrupted=False,
        sender_id="w",
        create_time_us=0,
        update_time_us=0,
    )


@pytest.mark.unit
def test_a_resync_still_reads_a_seq_that_arrived_after_a_higher_one() -> None:
    # This replica handed seq 3 to its watcher at once; seq 2, written by another replica, was
    # still on its way through the change feed when the feed had to resync.
    delivered = _Delivered(high=0)
    assert delivered.accept(_message(1))
    assert delivered.accept(_message(3))
    assert delivered.high == 1
    assert delivered.resync_queries("c") == (("c", "after", 1, ()),)
    assert delivered.accept(_message(2))
    assert delivered.high == 3
    assert not delivered.accept(_message(3))  # the feed's copy of the local hand-off
    assert delivered.accept(_message(4, final=False))
    assert delivered.resync_queries("c") == (("c", "after", 4, ()), ("c", "seqs", 0, (4,)))


async def _fill(store: Store, database: str, messages: int) -> None:
    client = open_client(store.uri, 60)
    try:
        docs = [
            message_to_doc(
                Message(
                    message_id=f"fill-{n}",
                    conversation_id=f"other-{n // 10}",
                    seq=n % 10 + 1,
                    revision=1,
                    role=Role.USER,
                    source=Source.TEXT,
                    text="earlier words",
                    final=True,
                    interrupted=False,
                    sender_id="someone",
                    create_time_us=0,
                    update_time_us=0,
                )
            )
            for n in range(messages)
        ]
        await client[database]["messages"].insert_many(docs)
    finally:
        await client.close()


@pytest.mark.mesh
@pytest.mark.parametrize("channel", [pb.CHANNEL_TEXT, pb.CHANNEL_VOICE], ids=["text", "voice"])
async def test_a_hundred_watchers_and_fifty_sends_a_second_leave_the_store_to_everyone(
    store: Store, database_name: str, agent_port: int, tmp_path: Path, channel: pb.Channel.ValueType
) -> None:
    # Other conversations' messages: a store that scans per watcher shows it at this size.
    await _fill(store, database_name, 10_000)
    # chat_svc in a process of its own, as it runs, with its default limit of watch streams per
    # user (20): this process only plays the clients.
    process = chat_process(tmp_path, "chat_svc", store.uri, database_name, f"127.0.0.1:{agent_port}")
    process.start()
    try:
        await wait_serving(process)
        async with grpc.aio.insecure_channel(address(process)) as connection:
            await _hundred_watchers(api_grpc.ConversationServiceStub(connection), channel)
    finally:
        process.stop()


async def _hundred_watchers(chat: api_grpc.ConversationServiceStub, channel: pb.Channel.ValueType) -> None:
    # A conversation with some history, so each opening replay has something to read. In a TEXT
    # one chat_svc also writes the agent's reply to every message (failed here: the stand-in has
    # no model), so the user's messages and the replies compete for seqs; in a call's, the voice
    # agent answers, and the sends are all that is written.
    conversation_id = (await create(chat, "alice", channel)).conversation.conversation_id
    for n in range(20):
        await chat.SendMessage(
            api.SendMessageRequest(conversation_id=conversation_id, text=f"old {n}", request_id=f"o{n}"),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
    bobs = (await create(chat, "bob")).conversation.conversation_id
    streams = [Stream(chat, conversation_id, "alice") for _ in range(100)]
    try:
        # One conversation is one user's: the limit bounds what their hundred streams can cost.
        await asyncio.wait_for(asyncio.gather(*(s.settled() for s in streams)), TIMEOUT)
        sends: list[asyncio.Future[Any]] = []
        gets: list[asyncio.Future[Any]] = []
        loop = asyncio.get_running_loop()
        begin = loop.time()
        # 50 sends a second for 5 s, open loop, while the watchers open; bob reads his own
        # conversation 5 times a second meanwhile.
        for n in range(250):
            await asyncio.sleep(max(0.0, begin + n / 50 - loop.time()))
            sends.append(
                asyncio.ensure_future(
                    chat.SendMessage(
                        api.SendMessageRequest(
                            conversation_id=conversation_id, text=f"new {n}", request_id=f"n{n}"
                        ),
                        metadata=as_user("alice"),
                        timeout=TIMEOUT,
                    )
                )
            )
            if n % 10 == 0:
                gets.append(
                    asyncio.ensure_future(
                        chat.GetConversation(
                            api.GetConversationRequest(conversation_id=bobs),
                            metadata=as_user("bob"),
                            timeout=TIMEOUT,
                        )
                    )
                )
        sent = await asyncio.gather(*sends)  # every send succeeds (an error would raise here)
        got = await asyncio.gather(*gets)
        assert len({m.message.seq for m in sent}) == 250
        assert all(g.conversation.conversation_id == bobs for g in got)
        served = [s for s in streams if not s.task.done()]
        refused = [s for s in streams if s.task.done()]
        assert len(served) == 20
        for stream in refused:
            error = stream.task.exception()
            assert isinstance(error, grpc.aio.AioRpcError)
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        expected = {f"old {n}" for n in range(20)} | {f"new {n}" for n in range(250)}
        for stream in served:
            # Every message of the user's once; replies (TEXT) come on top.
            await _until(lambda s=stream: expected <= set(s.finals().values()))
            assert stream.doubled() == []
    finally:
        await asyncio.gather(*(s.close() for s in streams))


async def test_one_user_holds_a_bounded_number_of_watch_streams(
    store: Store, database_name: str, agent_port: int
) -> None:
    async with replica(store, database_name, agent_port, WATCH_MAX_PER_USER=2) as chat:
        conversation_id = (await create(chat, "alice")).conversation.conversation_id
        bobs = (await create(chat, "bob")).conversation.conversation_id
        held = [Stream(chat, conversation_id, "alice"), Stream(chat, conversation_id, "alice")]
        others = Stream(chat, bobs, "bob")
        try:
            await asyncio.wait_for(asyncio.gather(*(s.live.wait() for s in [*held, others])), TIMEOUT)
            refused = Stream(chat, conversation_id, "alice")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await refused.task
            assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            quotas = []
            for status in _details(caught.value):
                for detail in status.details:
                    if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                        failure = error_details_pb2.QuotaFailure()
                        detail.Unpack(failure)
                        quotas += [(v.subject, v.description) for v in failure.violations]
            assert quotas
            assert quotas[0][0] == "user:alice"
            # A stream that ends gives its place back.
            await held.pop().close()
            again = Stream(chat, conversation_id, "alice")
            held.append(again)
            await asyncio.wait_for(again.live.wait(), TIMEOUT)
        finally:
            await asyncio.gather(*(s.close() for s in [*held, others]))


async def test_a_replica_whose_copy_of_a_turn_went_stale_still_writes_the_stored_one(
    store: Store, database_name: str, agent_port: int
) -> None:
    async with (
        replica(store, database_name, agent_port) as a,
        replica(store, database_name, agent_port) as b,
    ):
        conversation_id = (await create(a, "alice", pb.CHANNEL_VOICE)).conversation.conversation_id
        first = await report(a, conversation_id, segment("s", "hel", final=False))
        assert (first.results[0].seq, first.results[0].revision) == (1, 1)
        # b moves the turn on; a still remembers revision 1.
        moved = await report(b, conversation_id, segment("s", "hello wor", final=False))
        assert moved.results[0].revision == 2
        final = await report(a, conversation_id, segment("s", "hello world"))
        assert (final.results[0].seq, final.results[0].revision) == (1, 3)
        # A late retry of a's first report, identical to what a last wrote itself: the answer is
        # the stored turn (final, revision 3), which an interim report never turns back.
        late = await report(a, conversation_id, segment("s", "hel", final=False))
        assert (late.results[0].revision, late.results[0].created) == (3, False)
        listed = await b.ListMessages(
            api.ListMessagesRequest(conversation_id=conversation_id),
            metadata=as_user("alice"),
            timeout=TIMEOUT,
        )
        assert [(m.seq, m.text, m.final, m.revision) for m in listed.messages] == [
            (1, "hello world", True, 3)
        ]


@pytest.mark.unit
async def test_watchers_opening_together_share_one_replay_and_never_an_older_one() -> None:
    shared = _SharedReads()
    reads: list[int] = []
    release = asyncio.Event()

    async def read() -> _Snapshot:
        reads.append(len(reads))
        await release.wait()
        return _Snapshot((), _conversation())

    key = (("c", "after", 0, ()),)
    # A hundred watchers ask at once: one read serves them all.
    first = [asyncio.ensure_future(shared.read(key, read)) for _ in range(100)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert reads == [0]
    # Watchers asking while that read runs subscribed after it started: they wait for the next
    # read, one for all of them, never for the one already under way.
    later = [asyncio.ensure_future(shared.read(key, read)) for _ in range(50)]
    await asyncio.sleep(0)
    assert reads == [0]
    release.set()
    await asyncio.gather(*first, *later)
    assert reads == [0, 1]


def _conversation() -> Conversation:
    return Conversation(
        conversation_id="c",
        user_id="u",
        agent_id="default",
        channel=Channel.VOICE,
        status=Status.ACTIVE,
        title="",
        room_name="",
        metadata={},
        create_time_us=0,
    )
