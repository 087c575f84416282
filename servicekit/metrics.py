"""Prometheus metrics: the RPC metrics every service shares, the naming rule, and the scrape endpoint.

RPC metrics use the names and labels of the gRPC ecosystem's Prometheus interceptors
(`grpc_server_handled_total`, `grpc_server_handling_seconds`, labels `grpc_service`,
`grpc_method`, `grpc_type`, `grpc_code`), so existing dashboards and alerts work unchanged. The
domain's own metrics are defined next to the code they measure, named `syntera_<part>_<what>`
through `NAMESPACE` (e.g. `Gauge("watch_streams_open", ..., namespace=NAMESPACE, subsystem="chat")`).

Metric labels never carry ids (conversation, user, room): their number is unbounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import structlog
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, start_http_server

log = structlog.get_logger("servicekit.metrics")

NAMESPACE = "syntera"

# `*_created` series (a timestamp per counter) double what is scraped and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

# Unary calls take milliseconds; a call that waits on LiveKit or a model takes seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

RPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_service", "grpc_method", "grpc_type"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, as the server saw it (streams: their lifetime).",
    ["grpc_service", "grpc_method", "grpc_type"],
    buckets=LATENCY_BUCKETS,
)
RPC_STREAMS_OPEN = Gauge(
    "grpc_server_streams_open",
    "Server streams in progress (chat_svc's watch streams, say).",
    ["grpc_service", "grpc_method"],
)

UNARY = "unary"
SERVER_STREAM = "server_stream"


def split_method(method: str) -> tuple[str, str]:
    """`/pkg.Service/Method` into (`pkg.Service`, `Method`)."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


# Each method's labelled series, looked up once: `labels()` splits, builds and locks on every call,
# and it ran three times per RPC on the token path. Bounded by the methods and codes that exist.
_started: dict[tuple[str, str], Counter] = {}
_handled: dict[tuple[str, str, str], Counter] = {}
_seconds: dict[tuple[str, str], Histogram] = {}


def rpc_started(method: str, rpc_type: str) -> None:
    series = _started.get((method, rpc_type))
    if series is None:
        series = _started[(method, rpc_type)] = RPC_STARTED.labels(*split_method(method), rpc_type)
    series.inc()


def rpc_handled(method: str, rpc_type: str, code: str, seconds: float) -> None:
    """Counts a finished RPC under its gRPC status name (`OK`, `NOT_FOUND`, `CANCELLED`, ...)."""
    key = (method, rpc_type, code)
    handled = _handled.get(key)
    if handled is None:
        handled = _handled[key] = RPC_HANDLED.labels(*split_method(method), rpc_type, code)
    handled.inc()
    timing = _seconds.get((method, rpc_type))
    if timing is None:
        timing = _seconds[(method, rpc_type)] = RPC_SECONDS.labels(*split_method(method), rpc_type)
    timing.observe(seconds)


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC by method, type and final status code.

    It sits outside `ServiceInterceptor`, so it sees the status that interceptor gave the call
    (domain errors, auth failures) through the servicer context, whichever way the call ended.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _timed_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _timed_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # our contracts have no client streams


def _timed_unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def timed(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        rpc_started(method, UNARY)
        started = time.perf_counter()
        outcome: BaseException | None = None
        try:
            return await behavior(request, ctx)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            rpc_handled(method, UNARY, _code(ctx, outcome), time.perf_counter() - started)

    return timed


def _timed_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def timed(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        rpc_started(method, SERVER_STREAM)
        started = time.perf_counter()
        outcome: BaseException | None = None
        open_streams = RPC_STREAMS_OPEN.labels(*split_method(method))
        open_streams.inc()
        try:
            async for item in behavior(request, ctx):
                yield item
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            open_streams.dec()
            rpc_handled(method, SERVER_STREAM, _code(ctx, outcome), time.perf_counter() - started)

    return timed


def _code(ctx: grpc.aio.ServicerContext[Any, Any], outcome: BaseException | None) -> str:
    """The status the call ended with: the one set on the context, else what the outcome implies."""
    code = ctx.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if outcome is None:
        return grpc.StatusCode.OK.name
    if isinstance(outcome, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


def serve(host: str, port: int) -> tuple[WSGIServer, int]:
    """Serves `/metrics` (the process's default registry) on a daemon thread; returns the bound port.

    Port 0 picks a free one. The server lives as long as the process: there is nothing to flush.
    """
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_port)
    log.info("metrics endpoint ready", address=f"http://{host}:{bound}/metrics")
    return server, bound
