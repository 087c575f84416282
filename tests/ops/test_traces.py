"""One request, one trace: Envoy → agent_svc → chat_svc → MongoDB, joined by W3C trace context.

Every process exports to a local OTLP receiver (tests/ops/otlp_receiver.py) as it would to a
collector. The request carries a `traceparent` of our own, so its trace id is known; all spans of
that trace must come from the three processes, each a child of the one before it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devrun.envoy_config import EdgeConfig
from devrun.launch import start_envoy
from devrun.ports import free_port
from devrun.processes import ManagedProcess
from tests.ops.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.identity import user_token
from tests.support.mesh import Mesh, MeshFactory

pytestmark = pytest.mark.mesh

EDGE = "syntera-edge"
SERVER, CLIENT = 2, 3  # OTLP span kinds


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver().start()
    yield running
    running.stop()


@pytest.fixture
def traced(mesh_factory: MeshFactory, receiver: OtlpReceiver, tmp_path: Path) -> Iterator[tuple[Mesh, str]]:
    """A mesh whose services and Envoy all export spans to `receiver`; yields it and Envoy's URL."""
    mesh = mesh_factory(with_envoy=False, extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
    assert mesh.chat_addr is not None
    edge = EdgeConfig(
        listen_port=free_port(),
        admin_port=free_port(),
        agent_address=mesh.agent_addr,
        chat_address=mesh.chat_addr,
        otlp_endpoint=receiver.endpoint,
    )
    envoy: ManagedProcess = start_envoy(edge, tmp_path / "envoy.json", tmp_path / "envoy.log")
    try:
        yield mesh, f"http://127.0.0.1:{edge.listen_port}"
    finally:
        envoy.stop()


def _complete(spans: list[ReceivedSpan]) -> bool:
    services = {s.service for s in spans}
    mongo = [s for s in spans if s.service == "chat_svc" and s.attributes.get("db.system") == "mongodb"]
    return {EDGE, "agent_svc", "chat_svc"} <= services and bool(mongo)


def test_a_request_is_one_trace_from_the_edge_to_mongodb(
    traced: tuple[Mesh, str], receiver: OtlpReceiver
) -> None:
    _, edge_url = traced
    headers = {"authorization": f"Bearer {user_token('trace-user')}"}
    with httpx.Client(base_url=edge_url, timeout=10.0) as http:
        created = http.post(
            "/v1/conversations",
            json={"agentId": "default", "channel": "CHANNEL_VOICE", "requestId": uuid.uuid4().hex},
            headers=headers,
        )
        assert created.status_code == 200, created.text
        conversation_id = created.json()["conversation"]["conversationId"]

        trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
        reply = http.post(
            "/api/livekit/token",
            json={"conversationId": conversation_id, "userId": "trace-user", "agentId": "default"},
            headers=headers | {"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        assert reply.status_code == 200, reply.text

    spans = receiver.wait_for(_complete, trace_id)
    assert _complete(spans), f"spans of the trace: {[(s.service, s.name) for s in spans]}"
    by_id = {s.span_id: s for s in spans}

    def parent(span: ReceivedSpan) -> ReceivedSpan | None:
        return by_id.get(span.parent_span_id)

    # The edge continued the caller's trace.
    edge_roots = [s for s in spans if s.service == EDGE and s.parent_span_id == caller_span]
    assert edge_roots, [(s.service, s.name, s.parent_span_id) for s in spans]
    # agent_svc served GenerateToken as a child of Envoy's span.
    (agent_server,) = [
        s
        for s in spans
        if s.service == "agent_svc" and s.kind == SERVER and s.name.endswith("/GenerateToken")
    ]
    agent_parent = parent(agent_server)
    assert agent_parent is not None
    assert agent_parent.service == EDGE
    # chat_svc answered agent_svc's ownership check as a child of agent_svc's client span.
    (chat_server,) = [s for s in spans if s.service == "chat_svc" and s.kind == SERVER]
    chat_parent = parent(chat_server)
    assert chat_parent is not None
    assert chat_parent.service == "agent_svc"
    assert chat_parent.kind == CLIENT
    # ...and read MongoDB inside that call, without the command's contents. (agent_svc's own
    # MongoDB commands, its quota and call store, hang under its spans the same way.)
    mongo = [s for s in spans if s.attributes.get("db.system") == "mongodb"]
    assert any(parent(s) == chat_server for s in mongo)
    for span in mongo:
        assert span.kind == CLIENT
        owner = parent(span)
        assert owner is not None
        assert owner.service == span.service
        assert "db.statement" not in span.attributes
