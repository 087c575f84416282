"""Transcript path: N conversations each reporting segments at a fixed rate, one watcher each.

Prints p50/p99 from the ReportTranscript call to delivery at the watcher, and segments lost.
`python -m bench.transcripts [--conversations 100] [--rate 4] [--seconds 10]`
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import grpc

from bench._chat_mesh import chat_mesh
from bench.identity import as_service, as_user
from bench.stats import percentile
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as pb


async def _one(
    stub: api_grpc.ConversationServiceAsyncStub,
    user: str,
    rate: float,
    seconds: float,
    latencies: list[float],
) -> tuple[int, int]:
    created = await stub.CreateConversation(
        api.CreateConversationRequest(
            agent_id="default", channel=pb.CHANNEL_VOICE, request_id=uuid.uuid4().hex
        ),
        metadata=as_user(user),
        timeout=30,
    )
    conversation_id = created.conversation.conversation_id
    sent_at: dict[str, float] = {}
    received: set[str] = set()
    call = stub.WatchConversation(
        api.WatchConversationRequest(conversation_id=conversation_id), metadata=as_user(user)
    )
    opened = asyncio.Event()

    async def watch() -> None:
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "keep_alive":
                opened.set()
            elif kind == "message" and event.message.final and event.message.segment_id not in received:
                received.add(event.message.segment_id)
                latencies.append(time.perf_counter() - sent_at[event.message.segment_id])

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(opened.wait(), 30)
    count = int(rate * seconds)
    started = time.monotonic()
    for n in range(count):
        # Open loop: segment n is due at n / rate whatever the previous reports took, as speech is.
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        segment_id = f"seg-{n}"
        sent_at[segment_id] = time.perf_counter()
        await stub.ReportTranscript(
            api.ReportTranscriptRequest(
                conversation_id=conversation_id,
                segments=[
                    pb.TranscriptSegment(
                        segment_id=segment_id, role=pb.ROLE_USER, text=f"turn {n}", final=True
                    )
                ],
            ),
            metadata=as_service(),
            timeout=30,
        )
    deadline = time.monotonic() + 30
    while len(received) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - polls state another task fills in
        await asyncio.sleep(0.05)
    call.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return count, len(received)


async def run(conversations: int, rate: float, seconds: float) -> None:
    async with chat_mesh() as target, grpc.aio.insecure_channel(target) as channel:
        stub = api_grpc.ConversationServiceStub(channel)
        latencies: list[float] = []
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_one(stub, f"user{n}", rate, seconds, latencies) for n in range(conversations))
        )
        elapsed = time.perf_counter() - started
        sent = sum(r[0] for r in results)
        got = sum(r[1] for r in results)
        print(f"transcripts: {conversations} conversations x {rate}/s for {seconds}s (wall {elapsed:.1f}s)")
        print(f"  segments reported {sent}, delivered {got}, lost {sent - got}")
        print(
            f"  report->delivery p50 {percentile(latencies, 50) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(run(args.conversations, args.rate, args.seconds))


if __name__ == "__main__":
    main()
