"""Correlation and metrics on the real mesh: one request id in every process's log lines, JSON only,
Prometheus endpoints with RPC and domain metrics, Envoy's stats scrapeable and its health checks on.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.identity import user_token
from tests.support.mesh import AGENT_SVC, CHAT_SVC, Mesh

pytestmark = pytest.mark.mesh


def _samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(url, timeout=5.0).text
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _log_lines(mesh: Mesh, name: str) -> list[dict[str, object]]:
    lines = (mesh.log_dir / f"{name}.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _request(mesh: Mesh, request_id: str) -> httpx.Response:
    assert mesh.envoy_url is not None
    headers = {"authorization": f"Bearer {user_token('ops-user')}", "x-request-id": request_id}
    with httpx.Client(base_url=mesh.envoy_url, timeout=10.0) as http:
        created = http.post(
            "/v1/conversations",
            json={"agentId": "default", "channel": "CHANNEL_VOICE", "requestId": uuid.uuid4().hex},
            headers=headers,
        )
        assert created.status_code == 200, created.text
        conversation_id = created.json()["conversation"]["conversationId"]
        return http.post(
            "/api/livekit/token",
            json={"conversationId": conversation_id, "userId": "ops-user", "agentId": "default"},
            headers=headers,
        )


def test_the_request_id_is_in_every_service_log_and_in_the_reply(mesh: Mesh) -> None:
    request_id = f"ops-{uuid.uuid4().hex}"
    reply = _request(mesh, request_id)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == request_id
    deadline = time.monotonic() + 5
    while True:
        agent = [line for line in _log_lines(mesh, AGENT_SVC) if line.get("request_id") == request_id]
        chat = [line for line in _log_lines(mesh, CHAT_SVC) if line.get("request_id") == request_id]
        # chat_svc: CreateConversation (from Envoy) and GetConversation (agent_svc's ownership
        # check, which passed the id on); agent_svc: GenerateToken and CreateConversation's token.
        chat_methods = {line.get("method") for line in chat}
        if (
            agent
            and {
                "/syntera.conversation.v1.ConversationService/CreateConversation",
                "/syntera.conversation.v1.ConversationService/GetConversation",
            }
            <= chat_methods
        ):
            break
        assert time.monotonic() < deadline, (agent, chat)
        time.sleep(0.1)
    assert "/syntera.livekit.v1.LiveKitService/GenerateToken" in {line.get("method") for line in agent}


def test_every_log_line_is_json_with_a_level_and_a_service(mesh: Mesh) -> None:
    _request(mesh, f"ops-{uuid.uuid4().hex}")
    for name in (AGENT_SVC, CHAT_SVC):
        lines = _log_lines(mesh, name)  # json.loads fails on any plain line (stdlib logs included)
        assert lines
        for line in lines:
            assert line["service"] == name
            assert "level" in line
            assert "timestamp" in line


def test_services_expose_rpc_and_domain_metrics(mesh: Mesh) -> None:
    assert _request(mesh, f"ops-{uuid.uuid4().hex}").status_code == 200
    agent = _samples(mesh.metrics_url(AGENT_SVC))
    handled = {
        (labels["grpc_method"], labels["grpc_code"])
        for labels, value in agent["grpc_server_handled_total"]
        if value > 0
    }
    assert ("GenerateToken", "OK") in handled
    assert any(
        labels["grpc_method"] == "GenerateToken" for labels, _ in agent["grpc_server_handling_seconds_bucket"]
    )
    chat = _samples(mesh.metrics_url(CHAT_SVC))
    assert ("GetConversation", "OK") in {
        (labels["grpc_method"], labels["grpc_code"]) for labels, _ in chat["grpc_server_handled_total"]
    }


def test_unauthenticated_calls_are_counted_under_their_code(mesh: Mesh) -> None:
    assert mesh.envoy_url is not None
    reply = httpx.post(mesh.envoy_url + "/api/livekit/token", json={"conversationId": "x"}, timeout=10.0)
    assert reply.status_code == 401
    handled = _samples(mesh.metrics_url(AGENT_SVC))["grpc_server_handled_total"]
    assert any(
        labels["grpc_method"] == "GenerateToken" and labels["grpc_code"] == "UNAUTHENTICATED" and value > 0
        for labels, value in handled
    )


def test_envoy_stats_are_scrapeable_and_its_clusters_health_checked(mesh: Mesh) -> None:
    samples = _samples(f"http://127.0.0.1:{mesh.envoy_admin_port}/stats/prometheus")
    checks = {
        labels["envoy_cluster_name"]: value
        for labels, value in samples["envoy_cluster_health_check_success_total"]
        if "envoy_cluster_name" in labels
    }
    deadline = time.monotonic() + 10
    while not (checks.get("agent_svc") and checks.get("chat_svc")):
        assert time.monotonic() < deadline, checks
        time.sleep(0.5)
        samples = _samples(f"http://127.0.0.1:{mesh.envoy_admin_port}/stats/prometheus")
        checks = {
            labels["envoy_cluster_name"]: value
            for labels, value in samples["envoy_cluster_health_check_success_total"]
            if "envoy_cluster_name" in labels
        }
    assert "envoy_cluster_upstream_rq_total" in samples
