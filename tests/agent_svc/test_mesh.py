"""agent_svc as a real process (`python -m agent_svc`) with the store and the real LiveKit server."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from livekit.api import TokenVerifier

from devrun.ports import free_port
from devrun.processes import ManagedProcess
from syntera.livekit.v1 import livekit_service_pb2 as pb
from syntera.livekit.v1 import livekit_service_pb2_grpc as pb_grpc
from tests.agent_svc.livekit_support import LiveKitServer, joined
from tests.agent_svc.support import LIVEKIT_KEY, LIVEKIT_SECRET
from tests.conftest import Store
from tests.support.eventually import eventually
from tests.support.identity import JWT_SECRET, SERVICE_JWT_SECRET, bearer, service_token

pytestmark = [pytest.mark.mesh, pytest.mark.slow]


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "SYNTERA_", "MONGODB_"))}
    env.update(overrides)
    return env


async def test_agent_svc_process_serves_and_stops_cleanly_on_sigterm(
    tmp_path: Path, store: Store, database_name: str, livekit: LiveKitServer
) -> None:
    conversation_id = f"m-{uuid.uuid4().hex[:12]}"
    port = free_port()
    log_path = tmp_path / "agent_svc.log"
    process = ManagedProcess(
        "agent_svc",
        [sys.executable, "-m", "agent_svc"],
        log_path,
        env=_env(
            SYNTERA_JWT_SECRET=JWT_SECRET,
            SYNTERA_SERVICE_JWT_SECRET=SERVICE_JWT_SECRET,
            AGENT_SVC_PORT=str(port),
            MONGODB_URI=store.uri,
            MONGODB_DATABASE=database_name,
            LIVEKIT_URL=livekit.url,
            LIVEKIT_API_KEY=LIVEKIT_KEY,
            LIVEKIT_API_SECRET=LIVEKIT_SECRET,
            CHAT_SVC_ADDRESS="127.0.0.1:1",
            LOG_FORMAT="json",
            # The session's LiveKit server holds other tests' rooms, which reconciliation counts.
            QUOTA_MAX_CONCURRENT_AGENT_SESSIONS="0",
        ),
        cwd=tmp_path,  # no stray .env is picked up
    ).start()
    try:
        process.wait_for_port("127.0.0.1", port, timeout=60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await _wait_serving(channel, "syntera.livekit.v1.LiveKitService")
            stub = pb_grpc.LiveKitServiceStub(channel)
            service = bearer(service_token("chat_svc"))
            token = await stub.GenerateToken(
                pb.GenerateTokenRequest(conversation_id=conversation_id, user_id="alice", agent_id="default"),
                metadata=service,
                timeout=10,
            )
            assert TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(token.token).identity == "alice"
            created = await stub.CreateRoom(
                pb.CreateRoomRequest(conversation_id=conversation_id), metadata=service, timeout=10
            )
            assert created.room_name == f"conversation:{conversation_id}"
            assert not created.exists
            # The token joins the room the process created, and the server holds our dispatch.
            async with joined(token.url, token.token) as alice:
                assert alice.room.name == created.room_name
            server = livekit.api()
            try:
                dispatches = await server.agent_dispatch.list_dispatch(created.room_name)
            finally:
                await server.aclose()
            assert [d.id for d in dispatches if d.agent_name == "syntera-voice"] == [created.dispatch_id]

        process.signal(signal.SIGTERM)
        assert process.popen is not None
        assert process.popen.wait(30) == 0
    finally:
        process.stop()
    log_text = log_path.read_text()
    assert "server stopped" in log_text
    assert LIVEKIT_SECRET not in log_text
    assert token.token not in log_text


async def _wait_serving(channel: grpc.aio.Channel, service: str, within_seconds: float = 30.0) -> None:
    """Health turns SERVING once MongoDB is reachable and the default agent is seeded."""
    health = health_pb2_grpc.HealthStub(channel)

    async def serving() -> bool:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, f"status {reply.status}"
        return True

    await eventually(serving, within=within_seconds, interval=0.1, what=f"{service} SERVING")


@pytest.mark.parametrize("missing", ["LIVEKIT_API_SECRET", "LIVEKIT_URL"])
def test_agent_svc_refuses_to_start_without_livekit_config(tmp_path: Path, missing: str) -> None:
    env = _env(
        SYNTERA_JWT_SECRET=JWT_SECRET,
        SYNTERA_SERVICE_JWT_SECRET=SERVICE_JWT_SECRET,
        LIVEKIT_URL="wss://lk.example.com",
        LIVEKIT_API_KEY=LIVEKIT_KEY,
        LIVEKIT_API_SECRET=LIVEKIT_SECRET,
        CHAT_SVC_ADDRESS="127.0.0.1:1",
    )
    del env[missing]
    process = ManagedProcess(
        "agent_svc", [sys.executable, "-m", "agent_svc"], tmp_path / "a.log", env=env, cwd=tmp_path
    )
    process.start()
    assert process.popen is not None
    assert process.popen.wait(60) == 2
    output = (tmp_path / "a.log").read_text()
    assert missing in output
    assert LIVEKIT_SECRET not in output
