"""Call setup: CreateConversation(VOICE) at a fixed arrival rate; prints p50/p99.

Against chat_svc as a process with an in-process agent_svc stand-in (token minting is measured
by the agent_svc benchmark). `python -m bench.call_setup [--rate 50] [--seconds 10]`
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc

from bench._chat_mesh import chat_mesh
from bench.identity import as_user
from bench.stats import percentile
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as pb


async def run(rate: float, seconds: float) -> None:
    async with chat_mesh() as target, grpc.aio.insecure_channel(target) as channel:
        stub = api_grpc.ConversationServiceStub(channel)
        latencies: list[float] = []
        errors = 0

        async def one(n: int) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                await stub.CreateConversation(
                    api.CreateConversationRequest(
                        agent_id="default", channel=pb.CHANNEL_VOICE, request_id=f"r{n}"
                    ),
                    metadata=as_user(f"user{n % 50}"),
                    timeout=30,
                )
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError:
                errors += 1

        tasks = []
        for n in range(int(rate * seconds)):
            tasks.append(asyncio.create_task(one(n)))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
        print(f"call setup: CreateConversation(VOICE) at {rate}/s for {seconds}s")
        print(
            f"  ok {len(latencies)}, errors {errors}, p50 {percentile(latencies, 50) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(run(args.rate, args.seconds))


if __name__ == "__main__":
    main()
