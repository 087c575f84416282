"""Call setup on the user's path: CreateConversation(VOICE) through Envoy at a fixed arrival rate.

Each setup is what the page does when a call starts: `CreateConversation` with CHANNEL_VOICE
through Envoy (native gRPC on the edge listener), which makes chat_svc store the conversation and
ask agent_svc for the caller's LiveKit join token. The mesh (seeded store, LiveKit, agent_svc,
chat_svc, Envoy) runs at `make run`'s log level; the load generator runs in a process of its own
and starts setups open loop (setup n is due at n / rate, whatever earlier ones took), spread over
50 users. Prints p50/p99 and errors; the target is p99 < 20 ms at 50 setups/s (issue #13, point 6).

`.venv/bin/python -m bench call_setup`, or `python -m bench.call_setup [--rate 50] [--seconds 10]
[--seed-conversations N] [--seed-messages M]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter

import grpc

from bench._chat_mesh import (
    SEED_CONVERSATIONS,
    SEED_MESSAGES,
    LoadProcess,
    ServerTimes,
    chat_mesh,
    emit,
    load_average,
    next_command,
)
from bench.identity import as_user
from bench.stats import percentile
from servicekit import logs
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as pb

_USERS = 50


async def _load(target: str, rate: float, seconds: float) -> None:
    """The load generator's process: setups at `rate` per second for `seconds`."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    tokens = [as_user(f"bench-setup-{n}") for n in range(_USERS)]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = api_grpc.ConversationServiceStub(channel)
        await channel.channel_ready()
        emit({"ready": True})
        await next_command()

        async def one(n: int) -> None:
            started = time.perf_counter()
            try:
                await stub.CreateConversation(
                    api.CreateConversationRequest(
                        agent_id="default", channel=pb.CHANNEL_VOICE, request_id=uuid.uuid4().hex
                    ),
                    metadata=tokens[n % _USERS],
                    timeout=10,
                )
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1

        loop = asyncio.get_running_loop()
        begin = loop.time()
        tasks = []
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + n / rate - loop.time()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    emit({"latencies": latencies, "errors": dict(errors)})


async def run(rate: float, seconds: float, seed_conversations: int, seed_messages: int) -> int:
    print(f"call setup: {load_average()} before the mesh starts", flush=True)
    async with chat_mesh(seed_conversations=seed_conversations, seed_messages=seed_messages) as target:
        print(f"  {target.seeded}; services at log level INFO; Envoy access log on", flush=True)
        load = LoadProcess(
            "bench.call_setup",
            ["load", "--target", target.envoy_addr, "--rate", str(rate), "--seconds", str(seconds)],
            target.workdir / "load" / "call_setup.log",
        )
        # Where the time goes: each service's own time per call, from its access log.
        chat = ServerTimes(target.mesh.log_dir / "chat_svc.log", "/CreateConversation")
        agent = ServerTimes(target.mesh.log_dir / "agent_svc.log", "/GenerateToken")
        try:
            await load.line(60)
            chat.start()
            agent.start()
            load.send({"go": True})
            result = await load.line(seconds + 60)
        finally:
            load.close()
        in_chat, in_agent = chat.durations_ms(), agent.durations_ms()
    latencies: list[float] = result["latencies"]
    errors: dict[str, int] = result["errors"]
    print(
        f"  CreateConversation(VOICE) through Envoy at {rate:g}/s for {seconds:g} s "
        f"({load_average()} after):\n"
        f"    ok {len(latencies)}, errors {sum(errors.values())} {errors or ''}\n"
        f"    p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms\n"
        f"    in chat_svc (CreateConversation, its log) p50 {percentile(in_chat, 50):.1f} ms, "
        f"p99 {percentile(in_chat, 99):.1f} ms; of which in agent_svc (GenerateToken, its log) "
        f"p50 {percentile(in_agent, 50):.1f} ms, p99 {percentile(in_agent, 99):.1f} ms",
        flush=True,
    )
    return 1 if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="role")
    load = sub.add_parser("load", help="(internal) the load generator's process")
    load.add_argument("--target", required=True)
    load.add_argument("--rate", type=float, required=True)
    load.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed-conversations", type=int, default=SEED_CONVERSATIONS)
    parser.add_argument("--seed-messages", type=int, default=SEED_MESSAGES)
    args = parser.parse_args()
    if args.role == "load":
        logs.configure("INFO", "json", service="bench-call-setup")
        asyncio.run(_load(args.target, args.rate, args.seconds))
    else:
        sys.exit(asyncio.run(run(args.rate, args.seconds, args.seed_conversations, args.seed_messages)))


if __name__ == "__main__":
    main()
