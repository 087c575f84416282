"""Prometheus metrics: the RPC metrics every service shares, the naming rule, and the scrape endpoint.

RPC metrics use the names and labels of the gRPC ecosystem's Prometheus interceptors
(`grpc_server_handled_total`, `grpc_server_handling_seconds`, labels `grpc_service`,
`grpc_method`, `grpc_type`, `grpc_code`), so existing dashboards and alerts work unchanged. The
domain's own metrics are defined next to the code they measure, named `syntera_<part>_<what>`
through `NAMESPACE` (e.g. `Gauge("watch_streams_open", ..., namespace=NAMESPACE, subsystem="chat")`).

Metric labels never carry ids (conversation, user, room): their number is unbounded.

The RPC metrics are recorded by `servicekit.interceptors.ServiceInterceptor`, in the same wrapper
that maps errors to statuses (one layer per call instead of two); the names, labels and the rule
for a call's final status live here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
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


class MethodMetrics:
    """One method's labelled series, looked up once: `labels()` splits, builds and locks on every
    call, and it ran three times per RPC on the token path.

    Made when the method's handler is first wrapped, that is at its first call, so a series still
    appears only once its method has been called. Bounded by the methods and codes that exist.
    """

    __slots__ = ("_handled", "_labels", "_open", "_seconds", "_started")

    def __init__(self, method: str, rpc_type: str) -> None:
        service, name = split_method(method)
        self._labels = (service, name, rpc_type)
        self._started = RPC_STARTED.labels(service, name, rpc_type)
        self._seconds = RPC_SECONDS.labels(service, name, rpc_type)
        self._handled: dict[str, Counter] = {}
        self._open = RPC_STREAMS_OPEN.labels(service, name) if rpc_type == SERVER_STREAM else None

    def started(self) -> None:
        self._started.inc()

    def stream_opened(self) -> None:
        if self._open is not None:
            self._open.inc()

    def stream_closed(self) -> None:
        if self._open is not None:
            self._open.dec()

    def handled(self, code: str, seconds: float) -> None:
        """Counts a finished RPC under its gRPC status name (`OK`, `NOT_FOUND`, `CANCELLED`, ...)."""
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = RPC_HANDLED.labels(*self._labels, code)
        counter.inc()
        self._seconds.observe(seconds)


def status_name(ctx: grpc.aio.ServicerContext[Any, Any], outcome: BaseException | None) -> str:
    """The status a call ended with: the one set on the context (the error mapping's, when it
    mapped a failure), else what the outcome implies."""
    code = ctx.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if outcome is None:
        return grpc.StatusCode.OK.name
    if isinstance(outcome, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


def timed(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` counted and timed, nothing else: for the methods left outside authentication and
    error mapping (health, reflection). Build it once per method, not per call."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _timed_unary(MethodMetrics(method, UNARY), handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _timed_stream(MethodMetrics(method, SERVER_STREAM), handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler  # our contracts have no client streams


def _timed_unary(series: MethodMetrics, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def timed(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        series.started()
        started = time.perf_counter()
        outcome: BaseException | None = None
        try:
            return await behavior(request, ctx)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            series.handled(status_name(ctx, outcome), time.perf_counter() - started)

    return timed


def _timed_stream(series: MethodMetrics, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def timed(request: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        series.started()
        started = time.perf_counter()
        outcome: BaseException | None = None
        series.stream_opened()
        try:
            async for item in behavior(request, ctx):
                yield item
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            series.stream_closed()
            series.handled(status_name(ctx, outcome), time.perf_counter() - started)

    return timed


def serve(host: str, port: int) -> tuple[WSGIServer, int]:
    """Serves `/metrics` (the process's default registry) on a daemon thread; returns the bound port.

    Port 0 picks a free one. The server lives as long as the process: there is nothing to flush.
    """
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_port)
    log.info("metrics endpoint ready", address=f"http://{host}:{bound}/metrics")
    return server, bound
