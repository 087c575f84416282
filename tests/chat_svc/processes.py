"""chat_svc as a real process (`python -m chat_svc`) for mesh tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devrun.ports import free_port
from devrun.processes import ManagedProcess
from tests.support.eventually import eventually
from tests.support.identity import JWT_SECRET, SERVICE_JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]


def chat_process(
    log_dir: Path, name: str, store_uri: str, database: str, agent_address: str
) -> ManagedProcess:
    port = free_port()
    env = {
        **os.environ,
        "SYNTERA_JWT_SECRET": JWT_SECRET,
        "SYNTERA_SERVICE_JWT_SECRET": SERVICE_JWT_SECRET,
        "CHAT_SVC_HOST": "127.0.0.1",
        "CHAT_SVC_PORT": str(port),
        "MONGODB_URI": store_uri,
        "MONGODB_DATABASE": database,
        "AGENT_SVC_ADDRESS": agent_address,
        "WATCH_KEEPALIVE_SECONDS": "0.5",
        "CHANGE_STREAM_POLL_SECONDS": "0.02",
        "MONGODB_TIMEOUT_SECONDS": "3",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "LOG_FORMAT": "json",
    }
    process = ManagedProcess(
        name, [sys.executable, "-m", "chat_svc"], log_dir / f"{name}.log", env=env, cwd=ROOT
    )
    process.port = port  # type: ignore[attr-defined]
    return process


def address(process: ManagedProcess) -> str:
    return f"127.0.0.1:{process.port}"  # type: ignore[attr-defined]


class ProcessExitedError(RuntimeError):
    """The process a test waits for is gone (not an AssertionError, so waiting stops at once)."""


async def wait_serving(process: ManagedProcess, limit_seconds: float = 60.0) -> None:
    """Polls the health service until SERVING; fails early if the process died."""
    async with grpc.aio.insecure_channel(address(process)) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            if not process.running():  # no retry can help: fail now, with its log
                raise ProcessExitedError(f"{process.name} exited:\n{process.log_tail()}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(
            serving,
            within=limit_seconds,
            interval=0.1,
            what=lambda: f"{process.name} serving:\n{process.log_tail()}",
        )
