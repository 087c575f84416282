"""Native gRPC and gRPC-web through Envoy, CORS, and what the edge refuses to route."""

from __future__ import annotations

import struct

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from livekit import api

from syntera.conversation.v1 import conversation_service_pb2 as conversation_pb2
from syntera.conversation.v1 import conversation_service_pb2_grpc as conversation_grpc
from syntera.livekit.v1 import livekit_service_pb2 as livekit_pb2
from syntera.livekit.v1 import livekit_service_pb2_grpc as livekit_grpc
from tests.edge.conftest import ConversationMaker
from tests.support.identity import bearer, service_token, user_token
from tests.support.mesh import Mesh

pytestmark = pytest.mark.mesh

ALLOWED_ORIGIN = "http://allowed.example"  # the mesh fixture's CORS origin
GENERATE_TOKEN = "/syntera.livekit.v1.LiveKitService/GenerateToken"
REPORT_TRANSCRIPT = "/syntera.conversation.v1.ConversationService/ReportTranscript"


def _grpc_web_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def _parse_grpc_web(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Data frames and the trailer frame's headers of a grpc-web response body."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    offset = 0
    while offset < len(body):
        flag, length = struct.unpack(">BI", body[offset : offset + 5])
        payload = body[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


async def test_native_grpc_through_envoy(mesh: Mesh, new_conversation: ConversationMaker) -> None:
    conversation_id = await new_conversation("alice")
    assert mesh.envoy_addr is not None
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
        stub = livekit_grpc.LiveKitServiceStub(channel)
        reply = await stub.GenerateToken(
            livekit_pb2.GenerateTokenRequest(conversation_id=conversation_id, agent_id="default"),
            metadata=bearer(user_token("alice")),
            timeout=10,
        )
        assert reply.room_name == f"conversation:{conversation_id}"
        claims = api.TokenVerifier(mesh.livekit.api_key, mesh.livekit.api_secret).verify(reply.token)
        assert claims.identity == "alice"

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.GenerateToken(
                livekit_pb2.GenerateTokenRequest(conversation_id=conversation_id), timeout=10
            )
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_web_through_envoy(
    mesh: Mesh, edge: httpx.AsyncClient, new_conversation: ConversationMaker
) -> None:
    conversation_id = await new_conversation("alice")
    request = livekit_pb2.GenerateTokenRequest(conversation_id=conversation_id, agent_id="default")
    reply = await edge.post(
        GENERATE_TOKEN,
        content=_grpc_web_frame(request.SerializeToString()),
        headers={
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "x-user-agent": "grpc-web-javascript/0.1",
            "origin": ALLOWED_ORIGIN,
            "authorization": f"Bearer {user_token('alice')}",
        },
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/grpc-web")
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    messages, trailers = _parse_grpc_web(reply.content)
    assert trailers.get("grpc-status") == "0", trailers
    assert len(messages) == 1
    token = livekit_pb2.GenerateTokenResponse.FromString(messages[0])
    assert token.room_name == f"conversation:{conversation_id}"
    assert token.identity == "alice"


async def test_grpc_web_errors_carry_the_status(edge: httpx.AsyncClient) -> None:
    request = livekit_pb2.GenerateTokenRequest(conversation_id="c1", agent_id="default")
    reply = await edge.post(
        GENERATE_TOKEN,
        content=_grpc_web_frame(request.SerializeToString()),
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    assert reply.status_code == 200
    # A trailers-only response puts the status in the headers; otherwise it is in the trailer frame.
    status = reply.headers.get("grpc-status") or _parse_grpc_web(reply.content)[1].get("grpc-status")
    assert status == str(grpc.StatusCode.UNAUTHENTICATED.value[0])


async def test_cors_preflight_from_an_allowed_origin(edge: httpx.AsyncClient) -> None:
    for path in ("/api/livekit/token", GENERATE_TOKEN):
        reply = await edge.options(
            path,
            headers={
                "origin": ALLOWED_ORIGIN,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type,x-grpc-web,x-user-agent",
            },
        )
        assert reply.status_code == 200, (path, reply.text)
        assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        allowed = {h.strip() for h in reply.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"} <= allowed
        exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
        assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= exposed


async def test_cors_refuses_other_origins(edge: httpx.AsyncClient) -> None:
    for path in ("/api/livekit/token", GENERATE_TOKEN):
        reply = await edge.options(
            path, headers={"origin": "http://evil.example", "access-control-request-method": "POST"}
        )
        assert "access-control-allow-origin" not in reply.headers, path
    actual = await edge.post(
        "/api/livekit/token",
        json={"conversationId": "c1", "agentId": "default"},
        headers={"origin": "http://evil.example"},
    )
    assert "access-control-allow-origin" not in actual.headers


async def test_report_transcript_is_not_reachable_through_envoy(mesh: Mesh, edge: httpx.AsyncClient) -> None:
    request = conversation_pb2.ReportTranscriptRequest(conversation_id="c1")
    assert mesh.envoy_addr is not None
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
        stub = conversation_grpc.ConversationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.ReportTranscript(request, metadata=bearer(service_token()), timeout=10)
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED

    service_auth = {"authorization": f"Bearer {service_token()}"}
    rest = await edge.post(
        "/v1/conversations/c1:reportTranscript", json={"segments": []}, headers=service_auth
    )
    assert rest.status_code == 404
    assert rest.json() == {"code": 5, "message": "not found"}
    for spelling in (
        REPORT_TRANSCRIPT,
        REPORT_TRANSCRIPT.lower(),
        "/syntera.conversation.v1.ConversationService//ReportTranscript",
        "/syntera.conversation.v1.ConversationService/%52eportTranscript",
    ):
        web = await edge.post(
            spelling,
            content=_grpc_web_frame(request.SerializeToString()),
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **service_auth},
        )
        status = web.headers.get("grpc-status") or _parse_grpc_web(web.content)[1].get("grpc-status")
        assert status == str(grpc.StatusCode.UNIMPLEMENTED.value[0]), spelling


async def test_report_transcript_is_served_on_the_mesh_network(mesh: Mesh) -> None:
    """The block is the edge's doing: on the mesh network chat_svc serves the method to services."""
    request = conversation_pb2.ReportTranscriptRequest(conversation_id="no-such-conversation")
    target = mesh.chat_addr or mesh.agent_addr
    async with grpc.aio.insecure_channel(target) as channel:
        stub = conversation_grpc.ConversationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.ReportTranscript(request, metadata=bearer(service_token()), timeout=10)
    if mesh.chat_addr is None:
        # Before chat_svc exists, no process serves it at all.
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    else:
        assert failure.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


async def test_health_and_reflection_are_not_exposed_through_envoy(mesh: Mesh) -> None:
    assert mesh.envoy_addr is not None
    async with grpc.aio.insecure_channel(mesh.envoy_addr) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
