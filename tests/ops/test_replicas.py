"""Two replicas of chat_svc and of agent_svc behind one Envoy, as Kubernetes runs them.

Replicas share nothing but MongoDB: a watcher on one replica gets what was reported through the
other (the change feed, not process memory, carries it). When the replica serving a watch stream
is killed, the client resumes through Envoy from its watermark on the other replica and ends up
with every turn exactly once. Envoy spreads calls over both agent_svc replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devrun.envoy_config import EdgeConfig
from devrun.launch import start_envoy, start_grpc_service
from devrun.ports import free_port
from devrun.processes import ManagedProcess
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as pb
from syntera.livekit.v1 import livekit_service_pb2, livekit_service_pb2_grpc
from tests.chat_svc.calls import TIMEOUT, as_user, create, report, segment
from tests.support.mesh import AGENT_SVC, CHAT_SVC, Mesh, MeshFactory

pytestmark = [pytest.mark.mesh, pytest.mark.timeout(180)]

USER = "replica-user"


@dataclass
class Replica:
    name: str
    address: str
    metrics_url: str
    process: ManagedProcess | None  # None: the mesh's own (stopped with the mesh)


@dataclass
class Replicated:
    mesh: Mesh
    chat: list[Replica]
    agent: list[Replica]
    envoy_addr: str


def _second(mesh: Mesh, name: str, port_variable: str, metrics_variable: str, tmp_path: Path) -> Replica:
    port, metrics_port = free_port(), free_port()
    env = dict(mesh.env) | {port_variable: str(port), metrics_variable: str(metrics_port)}
    address = f"127.0.0.1:{port}"
    process = start_grpc_service(f"{name}-2", name, address, env, tmp_path / f"{name}-2.log", cwd=tmp_path)
    return Replica(f"{name}-2", address, f"http://127.0.0.1:{metrics_port}/metrics", process)


@pytest.fixture
def replicated(mesh_factory: MeshFactory, tmp_path: Path) -> Iterator[Replicated]:
    mesh = mesh_factory(with_envoy=False)
    assert mesh.chat_addr is not None
    chat = [
        Replica(CHAT_SVC, mesh.chat_addr, mesh.metrics_url(CHAT_SVC), None),
        _second(mesh, CHAT_SVC, "CHAT_SVC_PORT", "CHAT_SVC_METRICS_PORT", tmp_path),
    ]
    agent = [
        Replica(AGENT_SVC, mesh.agent_addr, mesh.metrics_url(AGENT_SVC), None),
        _second(mesh, AGENT_SVC, "AGENT_SVC_PORT", "AGENT_SVC_METRICS_PORT", tmp_path),
    ]
    edge = EdgeConfig(
        listen_port=free_port(),
        admin_port=free_port(),
        agent_address=",".join(r.address for r in agent),
        chat_address=",".join(r.address for r in chat),
        health_check_interval_seconds=1,
    )
    envoy = start_envoy(edge, tmp_path / "envoy.json", tmp_path / "envoy.log")
    try:
        yield Replicated(mesh, chat, agent, f"127.0.0.1:{edge.listen_port}")
    finally:
        envoy.stop()
        for replica in (*chat, *agent):
            if replica.process is not None:
                replica.process.stop()


@pytest.fixture
async def channels(replicated: Replicated) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {
        "envoy": grpc.aio.insecure_channel(replicated.envoy_addr),
        **{r.name: grpc.aio.insecure_channel(r.address) for r in replicated.chat},
    }
    yield opened
    for channel in opened.values():
        await channel.close(None)


def _gauge(url: str, name: str, method: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url, timeout=5.0).text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("grpc_method") == method:
                return sample.value
    return 0.0


async def _read_until(
    stream: AsyncIterator[api.WatchConversationResponse], seen: list[int], last: int
) -> None:
    """Appends the seq of every message event until `last` has arrived."""
    async with asyncio.timeout(20):
        async for event in stream:
            if event.HasField("message"):
                seen.append(event.message.seq)
                if event.message.seq >= last:
                    return


async def test_a_watcher_on_one_replica_gets_what_the_other_stored(
    replicated: Replicated, channels: dict[str, grpc.aio.Channel]
) -> None:
    first, second = (api_grpc.ConversationServiceStub(channels[r.name]) for r in replicated.chat)
    conversation = (await create(first, USER, pb.CHANNEL_VOICE)).conversation
    for watching, reporting in ((first, second), (second, first)):
        stream = watching.WatchConversation(
            api.WatchConversationRequest(conversation_id=conversation.conversation_id, after_seq=0),
            metadata=as_user(USER),
        )
        seen: list[int] = []
        # The keep-alive after the replay says the watcher is live.
        async with asyncio.timeout(10):
            async for event in stream:
                if event.HasField("message"):
                    seen.append(event.message.seq)
                if event.HasField("keep_alive"):
                    break
        reply = await report(reporting, conversation.conversation_id, segment(f"s{len(seen) + 1}", "turn"))
        assert reply is not None
        await _read_until(stream, seen, len(seen) + 1)
        assert seen == list(range(1, len(seen) + 1))
        stream.cancel()


async def test_a_killed_replica_s_watchers_resume_on_the_other_with_nothing_lost_or_doubled(
    replicated: Replicated, channels: dict[str, grpc.aio.Channel]
) -> None:
    edge = api_grpc.ConversationServiceStub(channels["envoy"])
    conversation = (await create(edge, USER, pb.CHANNEL_VOICE)).conversation
    cid = conversation.conversation_id
    stream = edge.WatchConversation(
        api.WatchConversationRequest(conversation_id=cid, after_seq=0), metadata=as_user(USER)
    )
    async with asyncio.timeout(10):
        async for event in stream:
            if event.HasField("keep_alive"):
                break
    # Which replica did Envoy give the stream to? Each counts its open streams.
    (serving,) = [
        r
        for r in replicated.chat
        if _gauge(r.metrics_url, "grpc_server_streams_open", "WatchConversation") == 1
    ]
    (survivor,) = [r for r in replicated.chat if r is not serving]
    reporter = api_grpc.ConversationServiceStub(channels[survivor.name])

    seen: list[int] = []
    for turn in range(1, 4):
        await report(reporter, cid, segment(f"turn-{turn}", f"turn {turn}"))
    await _read_until(stream, seen, 3)

    # A crash, not a drain: the stream breaks without a goodbye.
    if serving.process is None:
        replicated.mesh.kill(CHAT_SVC)
    else:
        serving.process.kill()
    for turn in range(4, 7):
        await report(reporter, cid, segment(f"turn-{turn}", f"turn {turn}"))
    with pytest.raises(grpc.aio.AioRpcError) as broken:
        await _read_until(stream, seen, 6)
    assert broken.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)

    # The client resumes from its watermark; Envoy sends it to the replica that is left.
    watermark = max(seen)
    resumed = edge.WatchConversation(
        api.WatchConversationRequest(conversation_id=cid, after_seq=watermark), metadata=as_user(USER)
    )
    await _read_until(resumed, seen, 6)
    await report(reporter, cid, segment("turn-7", "turn 7"))
    await _read_until(resumed, seen, 7)
    resumed.cancel()
    assert seen == [1, 2, 3, 4, 5, 6, 7]


def test_envoy_spreads_calls_over_both_agent_replicas(replicated: Replicated) -> None:
    async def calls() -> None:
        async with grpc.aio.insecure_channel(replicated.envoy_addr) as channel:
            chat = api_grpc.ConversationServiceStub(channel)
            livekit = livekit_service_pb2_grpc.LiveKitServiceStub(channel)
            cid = (await create(chat, USER, pb.CHANNEL_VOICE)).conversation.conversation_id
            request = livekit_service_pb2.GenerateTokenRequest(
                conversation_id=cid, user_id=USER, agent_id="default"
            )
            for _ in range(8):
                await livekit.GenerateToken(request, metadata=as_user(USER), timeout=TIMEOUT)

    asyncio.run(calls())
    for replica in replicated.agent:
        handled = 0.0
        for family in text_string_to_metric_families(httpx.get(replica.metrics_url, timeout=5.0).text):
            for sample in family.samples:
                if (
                    sample.name == "grpc_server_handled_total"
                    and sample.labels["grpc_method"] == "GenerateToken"
                ):
                    handled += sample.value
        assert handled > 0, f"{replica.name} got no GenerateToken call"
