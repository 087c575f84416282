"""Builds and runs a grpc.aio server the way every service in the mesh does.

Health checking and reflection are always on; SIGTERM/SIGINT flip health to NOT_SERVING and drain
in-flight calls for a grace period before stopping.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from servicekit import tracing
from servicekit.auth import TokenPolicy
from servicekit.interceptors import ServiceInterceptor

log = structlog.get_logger("servicekit.server")

Registrar = Callable[[grpc.aio.Server], None]


@dataclass
class RunningServer:
    """A started server with its bound port and health servicer."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    service_names: Sequence[str]

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace_seconds: float) -> None:
        await self.set_serving(False)
        await self.server.stop(grace_seconds)


async def start_server(
    *,
    host: str,
    port: int,
    tokens: TokenPolicy,
    registrars: Sequence[Registrar],
    service_names: Sequence[str],
    self_authenticated: Sequence[str] = (),
) -> RunningServer:
    """Starts a server with our interceptor, health and reflection; returns once it listens.

    Health stays NOT_SERVING until the caller marks it serving (once its dependencies are ready).
    `self_authenticated` names methods that verify their callers themselves (see ServiceInterceptor).
    """
    server = grpc.aio.server(
        # Outermost first: the trace span covers the whole call. ServiceInterceptor also records
        # the RPC metrics, after its error mapping gave the call its final status.
        interceptors=[
            *tracing.server_interceptors(),
            ServiceInterceptor(tokens, self_authenticated=self_authenticated),
        ],
        options=[
            # Long-lived watch streams send keep-alives; allow client pings on idle connections too.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            # Above what the edge lets through (16 KiB of request headers, plus the few Envoy adds),
            # so a request Envoy forwards is never refused for its metadata.
            ("grpc.max_metadata_size", 32 * 1024),
            ("grpc.absolute_max_metadata_size", 32 * 1024),
        ],
    )
    for register in registrars:
        register(server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    await server.start()
    running = RunningServer(server, bound, health_servicer, service_names)
    await running.set_serving(False)
    return running


async def serve_until_signal(
    running: RunningServer,
    grace_seconds: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Marks the server serving and blocks until SIGTERM or SIGINT, then drains and stops."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await running.set_serving(True)
    log.info("server ready", port=running.port, services=list(running.service_names))
    await stop.wait()
    log.info("server draining", grace_seconds=grace_seconds)
    await running.stop(grace_seconds)
    if on_stop is not None:
        await on_stop()
    log.info("server stopped")
