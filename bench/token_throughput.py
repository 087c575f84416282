"""GenerateToken: requests per second and p50/p99 latency, direct gRPC and through Envoy (JSON and gRPC)."""

from __future__ import annotations

import json
import uuid

import aiohttp
import grpc

from bench.harness import BenchMesh
from bench.load import run_load
from bench.stats import RunResult
from servicekit import auth
from syntera.livekit.v1 import livekit_service_pb2, livekit_service_pb2_grpc

CALL_TIMEOUT_S = 10.0


async def measure(
    mesh: BenchMesh, *, concurrency: int, duration_s: float, warmup_s: float
) -> list[RunResult]:
    """One row per path; the same request (a fresh conversation id per run) on each."""
    token = auth.mint(mesh.jwt_secret, "bench-user", ttl_seconds=3600)
    conversation_id = uuid.uuid4().hex
    metadata = (("authorization", f"Bearer {token}"),)
    request = livekit_service_pb2.GenerateTokenRequest(conversation_id=conversation_id, agent_id="default")
    results: list[RunResult] = []

    for name, target in (
        ("GenerateToken gRPC direct", mesh.agent_addr),
        ("GenerateToken gRPC via Envoy", mesh.envoy_addr),
    ):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = livekit_service_pb2_grpc.LiveKitServiceStub(channel)

            async def grpc_call(stub: livekit_service_pb2_grpc.LiveKitServiceAsyncStub = stub) -> None:
                await stub.GenerateToken(request, metadata=metadata, timeout=CALL_TIMEOUT_S)

            results.append(
                await run_load(
                    name, grpc_call, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s
                )
            )

    body = json.dumps({"conversationId": conversation_id, "userId": "bench-user", "agentId": "default"})
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    # aiohttp rather than httpx: with 16 calls in flight httpx's own overhead dominated the tail.
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    async with aiohttp.ClientSession(mesh.envoy_url, connector=connector, timeout=timeout) as http:

        async def json_call() -> None:
            async with http.post("/api/livekit/token", data=body, headers=headers) as reply:
                reply.raise_for_status()
                await reply.read()

        results.append(
            await run_load(
                "POST /api/livekit/token via Envoy",
                json_call,
                concurrency=concurrency,
                duration_s=duration_s,
                warmup_s=warmup_s,
            )
        )
    return results
