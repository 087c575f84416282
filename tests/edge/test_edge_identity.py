"""No service identity from outside, through the real Envoy and services (issue 14, point 3).

Service tokens are for calls between services on the mesh network; through the edge they are
refused on every protocol, even when signed with the real service secret. Tokens forged with the
users' secret, or valid for centuries, are refused too. make run refuses to plan what the services
would refuse: dev mode (public secrets) beyond loopback, or a missing service secret.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

import grpc
import httpx
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devrun.run import PlanError, check_identity
from devrun.settings import RunSettings
from syntera.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from tests.support.identity import JWT_SECRET, bearer, service_token, user_token
from tests.support.mesh import Mesh

GET_AGENT = "/syntera.agent.v1.AgentService/GetAgent"


def _reason(body: dict[str, Any]) -> str:
    (info,) = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    reason: str = info["reason"]
    return reason


def _grpc_reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason


async def _get_agent(target: str, token: str) -> agent_service_pb2.GetAgentResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        reply: agent_service_pb2.GetAgentResponse = await stub.GetAgent(
            agent_service_pb2.GetAgentRequest(agent_id="default"), metadata=bearer(token), timeout=10
        )
        return reply


@pytest.mark.mesh
async def test_a_real_service_token_is_refused_through_the_edge_on_every_protocol(
    mesh: Mesh, edge: httpx.AsyncClient
) -> None:
    token = service_token("chat_svc")
    # On the mesh network the same token is a service's.
    assert (await _get_agent(mesh.agent_addr, token)).agent.agent_id == "default"

    rest = await edge.get("/v1/agents/default", headers={"authorization": f"Bearer {token}"})
    assert rest.status_code == 401, rest.text
    assert _reason(rest.json()) == "SERVICE_TOKEN_AT_EDGE"
    conversations = await edge.get("/v1/conversations", headers={"authorization": f"Bearer {token}"})
    assert conversations.status_code == 401, conversations.text

    assert mesh.envoy_addr is not None
    with pytest.raises(grpc.aio.AioRpcError) as native:
        await _get_agent(mesh.envoy_addr, token)
    assert native.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_reason(native.value) == "SERVICE_TOKEN_AT_EDGE"

    payload = agent_service_pb2.GetAgentRequest(agent_id="default").SerializeToString()
    web = await edge.post(
        GET_AGENT,
        content=base64.b64encode(b"\x00" + struct.pack(">I", len(payload)) + payload),
        headers={
            "content-type": "application/grpc-web-text",
            "x-grpc-web": "1",
            "authorization": f"Bearer {token}",
            # A client cannot take the edge's mark off: Envoy sets it whatever arrives.
            "x-syntera-edge": "",
        },
    )
    trailers = base64.b64decode(web.content)
    assert web.headers.get("grpc-status") == "16" or b"grpc-status:16" in trailers, (web.headers, trailers)


@pytest.mark.mesh
async def test_forged_and_everlasting_tokens_are_refused_at_the_edge(edge: httpx.AsyncClient) -> None:
    now = int(time.time())
    forged_service = jwt.encode(
        {"sub": "chat_svc", "role": "service", "iat": now, "exp": now + 600}, JWT_SECRET, algorithm="HS256"
    )
    everlasting = jwt.encode({"sub": "alice", "iat": now, "exp": 253402300799}, JWT_SECRET, algorithm="HS256")
    for token, reason in (
        (forged_service, "SERVICE_TOKEN_AT_EDGE"),
        (everlasting, "TOKEN_LIFETIME_TOO_LONG"),
    ):
        reply = await edge.get("/v1/conversations", headers={"authorization": f"Bearer {token}"})
        assert reply.status_code == 401, reply.text
        assert _reason(reply.json()) == reason
    fine = await edge.get("/v1/conversations", headers={"authorization": f"Bearer {user_token('alice')}"})
    assert fine.status_code == 200, fine.text


@pytest.mark.unit
def test_make_run_keeps_dev_mode_on_loopback() -> None:
    for variable in ("ENVOY_HOST", "AGENT_SVC_HOST", "CHAT_SVC_HOST", "VOICE_WORKER_HTTP_HOST"):
        settings = RunSettings.model_validate({"SYNTERA_DEV_MODE": "true", variable: "0.0.0.0"})  # noqa: S104
        with pytest.raises(PlanError, match=f"loopback addresses only .*{variable}=0.0.0.0"):
            check_identity(settings)
    check_identity(RunSettings.model_validate({"SYNTERA_DEV_MODE": "true"}))


@pytest.mark.unit
def test_make_run_outside_dev_mode_needs_both_secrets() -> None:
    only_users = RunSettings.model_validate({"SYNTERA_JWT_SECRET": "u" * 40})
    with pytest.raises(PlanError, match="SYNTERA_SERVICE_JWT_SECRET is empty"):
        check_identity(only_users)
    both = RunSettings.model_validate(
        {"SYNTERA_JWT_SECRET": "u" * 40, "SYNTERA_SERVICE_JWT_SECRET": "s" * 40}
    )
    check_identity(both)
    # Anywhere it likes, with secrets of its own.
    check_identity(
        RunSettings.model_validate(
            {"SYNTERA_JWT_SECRET": "u" * 40, "SYNTERA_SERVICE_JWT_SECRET": "s" * 40, "ENVOY_HOST": "0.0.0.0"}  # noqa: S104
        )
    )
