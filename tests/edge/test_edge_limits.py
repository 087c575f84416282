"""The edge's bounds, through a real Envoy in front of the real services (issue 14, point 1).

Body limits per route (413), header size (431), the request rate per client address (429 with
Retry-After), the header and idle timeouts (silent and trickling connections closed; watch streams
not), and the connection limit. Refusals carry a JSON `google.rpc.Status` for REST clients and a
code that says what happened (never UNKNOWN) for gRPC clients.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import subprocess
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from devrun.edge_limits import (
    BUFFER_FILTER,
    DEFAULT_BODY_LIMIT,
    GRPC_BODY_LIMITS,
    KIB,
    MIB,
    REST_BODY_LIMITS,
    EdgeLimits,
)
from devrun.envoy_config import EdgeConfig, envoy_binary, render_bootstrap, write_bootstrap
from syntera.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from syntera.agent.v1 import resources_pb2 as agent_pb
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from tests.edge.edge_support import OwnEdge, own_edge
from tests.support.identity import bearer, user_token
from tests.support.mesh import Mesh

AGENT_SERVICE = "syntera.agent.v1.AgentService"


def _auth(user: str = "alice") -> dict[str, str]:
    return {"authorization": f"Bearer {user_token(user)}"}


def _reason(body: dict[str, Any]) -> str:
    (info,) = [d for d in body.get("details", []) if d["@type"].endswith("google.rpc.ErrorInfo")]
    reason: str = info["reason"]
    return reason


def _routes(config: EdgeConfig) -> list[dict[str, Any]]:
    listener = render_bootstrap(config)["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes: list[dict[str, Any]] = hcm["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def _body_limit(route: dict[str, Any]) -> int:
    limit: int = route["typed_per_filter_config"][BUFFER_FILTER]["buffer"]["max_request_bytes"]
    return limit


# --- the rendered config ------------------------------------------------------------------------


@pytest.mark.unit
def test_every_forwarding_route_has_a_body_limit_sized_for_its_fields() -> None:
    routes = [r for r in _routes(EdgeConfig()) if "route" in r]
    limits = {r["name"]: _body_limit(r) for r in routes}
    assert limits[AGENT_SERVICE] == GRPC_BODY_LIMITS[AGENT_SERVICE] == 256 * KIB
    assert limits["syntera.conversation.v1.ConversationService"] == DEFAULT_BODY_LIMIT == 64 * KIB
    assert limits["rest:/v1/agents"] == 256 * KIB
    # LiveKit's webhooks (issue 11) are a few kB; the route allows far more.
    assert limits["rest:/api/livekit/webhook"] == 1 * MIB
    assert limits["rest-before-transcoding"] == DEFAULT_BODY_LIMIT
    names = [r["name"] for r in routes]
    # Longer prefixes before the catch-all, or they would never match.
    assert names.index("rest:/api/livekit/webhook") < names.index("rest-before-transcoding")
    assert {prefix for prefix, _ in REST_BODY_LIMITS} <= {r["match"].get("prefix") for r in routes}


@pytest.mark.unit
def test_small_limits_render_a_config_the_real_envoy_accepts(tmp_path: Path) -> None:
    limits = EdgeLimits(
        request_headers_timeout_seconds=0.5,
        idle_timeout_seconds=1,
        request_timeout_seconds=1,
        max_connections=10,
        rate_limit_per_second=1,
        rate_limit_burst=1,
        max_heap_bytes=64 * MIB,
    )
    path = write_bootstrap(EdgeConfig(limits=limits), tmp_path / "envoy.json")
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output


@pytest.mark.unit
def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate_limit_burst"):
        EdgeLimits(rate_limit_burst=0)
    with pytest.raises(ValueError, match="max_request_headers_kb"):
        EdgeLimits(max_request_headers_kb=200)


# --- sizes, through the shared mesh's Envoy -----------------------------------------------------


@pytest.mark.mesh
async def test_an_oversized_json_body_is_413_with_a_json_status_before_any_auth(
    edge: httpx.AsyncClient,
) -> None:
    body = json.dumps({"text": "a" * (DEFAULT_BODY_LIMIT + 1)})
    reply = await edge.post(
        "/v1/conversations/c1/messages", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413, reply.text
    assert reply.json()["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert _reason(reply.json()) == "BODY_TOO_LARGE"


@pytest.mark.mesh
async def test_agent_profiles_may_be_larger_up_to_their_own_limit(edge: httpx.AsyncClient) -> None:
    def profile(size: int) -> str:
        return json.dumps({"agentId": "big", "displayName": "Big", "instructions": "i" * size})

    within = await edge.post(
        "/v1/agents", content=profile(200 * KIB), headers={"content-type": "application/json"}
    )
    # Past the edge: the service answers (no token), the edge did not refuse the size.
    assert within.status_code == 401, within.text
    over = await edge.post(
        "/v1/agents", content=profile(300 * KIB), headers={"content-type": "application/json"}
    )
    assert over.status_code == 413, over.text


@pytest.mark.mesh
async def test_an_oversized_grpc_message_is_resource_exhausted_not_unknown(mesh: Mesh) -> None:
    assert mesh.envoy_addr is not None
    request = agent_service_pb2.CreateAgentRequest(
        agent=agent_pb.Agent(agent_id="big", display_name="Big", instructions="i" * (300 * KIB))
    )
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent_service_pb2_grpc.AgentServiceStub(channel).CreateAgent(
                request, metadata=bearer(user_token("alice")), timeout=10
            )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.mesh
async def test_an_oversized_grpc_web_message_is_resource_exhausted(edge: httpx.AsyncClient) -> None:
    message = conv_pb.SendMessageRequest(conversation_id="c1", text="a" * (DEFAULT_BODY_LIMIT + 1))
    payload = message.SerializeToString()
    frame = b"\x00" + struct.pack(">I", len(payload)) + payload
    reply = await edge.post(
        "/syntera.conversation.v1.ConversationService/SendMessage",
        content=base64.b64encode(frame),
        headers={"content-type": "application/grpc-web-text", "x-grpc-web": "1", **_auth()},
    )
    assert reply.headers.get("grpc-status") == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]), reply.headers


@pytest.mark.mesh
async def test_oversized_headers_are_431_with_a_json_status(edge: httpx.AsyncClient) -> None:
    reply = await edge.get("/v1/conversations", headers={**_auth(), "x-padding": "p" * (20 * KIB)})
    assert reply.status_code == 431, reply.text
    assert _reason(reply.json()) == "HEADERS_TOO_LARGE"
    fine = await edge.get("/v1/conversations", headers={**_auth(), "x-padding": "p" * (4 * KIB)})
    assert fine.status_code == 200, fine.text


# --- rate, time and connections, through an Envoy of the test's own -----------------------------


@pytest.mark.mesh
async def test_each_client_address_has_its_own_rate_limit_answered_429_with_retry_after(
    mesh: Mesh, tmp_path: Path
) -> None:
    limits = EdgeLimits(rate_limit_per_second=1, rate_limit_burst=5)
    with own_edge(mesh, tmp_path, limits) as envoy:
        async with httpx.AsyncClient(base_url=envoy.url, timeout=10) as first:
            codes = [(await first.get("/v1/conversations", headers=_auth())).status_code for _ in range(8)]
            assert codes[:5] == [200] * 5
            assert 429 in codes[5:]
            refused = await first.get("/v1/conversations", headers=_auth())
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert _reason(refused.json()) == "RATE_LIMITED"
        # Another client (another loopback address) is not held back by the first one.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=envoy.url, timeout=10, transport=transport) as second:
            assert (await second.get("/v1/conversations", headers=_auth())).status_code == 200
        async with grpc.aio.insecure_channel(f"127.0.0.1:{envoy.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await conv_grpc.ConversationServiceStub(channel).ListConversations(
                    conv_pb.ListConversationsRequest(), metadata=bearer(user_token("alice")), timeout=10
                )
        # RESOURCE_EXHAUSTED, not UNAVAILABLE: gRPC clients must not retry at once.
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def _open(envoy: OwnEdge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(envoy.host, envoy.port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent until it closed the connection (fails if it stays open longer)."""
    received = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            received += chunk
    return received


@pytest.mark.mesh
async def test_silent_and_trickling_connections_are_closed_after_the_header_timeout(
    mesh: Mesh, tmp_path: Path
) -> None:
    limits = EdgeLimits(request_headers_timeout_seconds=1, idle_timeout_seconds=30)
    with own_edge(mesh, tmp_path, limits) as envoy:
        silent_reader, silent = await _open(envoy)
        trickle_reader, trickle = await _open(envoy)
        trickle.write(b"GET /v1/conversations HTTP/1.1\r\nhost: edge\r\n")
        started = asyncio.get_running_loop().time()
        assert await _closed_within(silent_reader, 5) == b""
        answer = await _closed_within(trickle_reader, 5)
        elapsed = asyncio.get_running_loop().time() - started
        assert elapsed < 4, elapsed
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert _reason(body) == "REQUEST_TIMEOUT"
        for writer in (silent, trickle):
            writer.close()


@pytest.mark.mesh
async def test_a_watch_stream_outlives_the_idle_request_and_header_timeouts(
    mesh: Mesh, tmp_path: Path
) -> None:
    limits = EdgeLimits(
        request_headers_timeout_seconds=1,
        idle_timeout_seconds=1,
        request_timeout_seconds=1,
        unary_idle_timeout_seconds=1,
    )
    with own_edge(mesh, tmp_path, limits) as envoy:
        async with httpx.AsyncClient(base_url=envoy.url, timeout=30) as client:
            created = await client.post(
                "/v1/conversations",
                json={"agentId": "default", "channel": "CHANNEL_VOICE", "requestId": uuid.uuid4().hex},
                headers=_auth(),
            )
            assert created.status_code == 200, created.text
            cid = created.json()["conversation"]["conversationId"]
            async with client.stream("GET", f"/v1/conversations/{cid}:watch", headers=_auth()) as watch:
                assert watch.status_code == 200
                lines = watch.aiter_lines()
                await asyncio.sleep(3)  # three times every timeout of the edge
                sent = await client.post(
                    f"/v1/conversations/{cid}/messages",
                    json={"text": "still there?", "requestId": uuid.uuid4().hex},
                    headers=_auth(),
                )
                assert sent.status_code == 200, sent.text
                async with asyncio.timeout(10):
                    async for line in lines:
                        if "still there?" in line:
                            break


@pytest.mark.mesh
async def test_connections_beyond_the_limit_are_refused_and_served_again_once_free(
    mesh: Mesh, tmp_path: Path
) -> None:
    limits = EdgeLimits(max_connections=20, request_headers_timeout_seconds=30)
    with own_edge(mesh, tmp_path, limits) as envoy:
        held = [await _open(envoy) for _ in range(20)]
        await asyncio.sleep(0.5)
        reader, extra = await _open(envoy)
        assert await _closed_within(reader, 5) == b""  # refused: closed without a word
        extra.close()
        for _, writer in held:
            writer.close()
        async with httpx.AsyncClient(base_url=envoy.url, timeout=10) as client:
            async with asyncio.timeout(5):
                while True:
                    try:
                        reply = await client.get("/v1/conversations", headers=_auth())
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            assert reply.status_code == 200


@pytest.mark.unit
def test_the_kubernetes_edge_trusts_the_proxy_in_front_of_it_for_client_addresses() -> None:
    from devrun.kubernetes import kubernetes_edge

    def hcm(config: EdgeConfig) -> dict[str, Any]:
        listener = render_bootstrap(config)["static_resources"]["listeners"][0]
        typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
        return typed

    assert hcm(kubernetes_edge())["xff_num_trusted_hops"] == 1
    # make run: the peer is the client.
    assert "xff_num_trusted_hops" not in hcm(EdgeConfig())
    with pytest.raises(ValueError, match="trusted_proxy_hops"):
        EdgeLimits(trusted_proxy_hops=-1)


@pytest.mark.mesh
async def test_idle_connections_are_closed_sooner_as_the_connection_limit_nears(
    mesh: Mesh, tmp_path: Path
) -> None:
    limits = EdgeLimits(max_connections=40, idle_timeout_seconds=60, request_headers_timeout_seconds=60)
    with own_edge(mesh, tmp_path, limits) as envoy:
        request = (
            b"GET /v1/conversations HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer "
            + user_token("alice").encode()
            + b"\r\n\r\n"
        )
        held = []
        for _ in range(38):  # 95 % of the limit, each idle after one answered request
            reader, writer = await _open(envoy)
            writer.write(request)
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            held.append((reader, writer))
        # Not the configured minute: the overload manager scales the idle timeout down to 1 s (the
        # close then waits out Envoy's drain period).
        started = asyncio.get_running_loop().time()
        async with asyncio.timeout(20):
            for reader, writer in held:
                while await reader.read(65536):
                    pass
                writer.close()
        assert asyncio.get_running_loop().time() - started < 15


@pytest.mark.unit
def test_server_streams_have_routes_of_their_own_and_other_calls_an_idle_limit() -> None:
    routes = {r["name"]: r for r in _routes(EdgeConfig()) if "route" in r}
    conversations = "syntera.conversation.v1.ConversationService"
    for method in ("WatchConversation", "WatchConversations"):
        stream = routes[f"{conversations}/{method}"]
        assert stream["match"] == {"path": f"/{conversations}/{method}"}
        assert "idle_timeout" not in stream["route"]
    assert routes[conversations]["route"]["idle_timeout"] == "60s"
    assert routes["syntera.livekit.v1.LiveKitService"]["route"]["idle_timeout"] == "60s"
    # Internal methods are blocked, not routed, streams or not.
    assert "syntera.agent.v1.AgentService/GenerateReply" not in routes


@pytest.mark.mesh
async def test_a_call_whose_message_never_completes_is_cut_when_idle(mesh: Mesh, tmp_path: Path) -> None:
    limits = EdgeLimits(unary_idle_timeout_seconds=1)
    with own_edge(mesh, tmp_path, limits) as envoy:
        # A gRPC frame that announces 1,000 bytes and brings 10: the service waits for the rest.
        truncated = b"\x00" + struct.pack(">I", 1000) + b"\x0a\x02c1" + b"\x00" * 6
        async with httpx.AsyncClient(base_url=envoy.url, timeout=30) as client:
            started = asyncio.get_running_loop().time()
            reply = await client.post(
                "/syntera.conversation.v1.ConversationService/GetConversation",
                content=truncated,
                headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **_auth()},
            )
            elapsed = asyncio.get_running_loop().time() - started
        assert elapsed < 10, elapsed
        assert reply.headers.get("grpc-status") not in (None, "0"), reply.headers
