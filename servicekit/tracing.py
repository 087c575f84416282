"""OpenTelemetry tracing: W3C trace context in and out of every gRPC call, spans for MongoDB commands.

`configure` installs a tracer provider that exports over OTLP/gRPC when an endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`); without one nothing is installed and every span is a no-op.
Trace context travels as the W3C `traceparent` header (the API's default propagator), which is
also what Envoy's OpenTelemetry tracer sends, so a request's spans form one trace from the edge
through agent_svc and chat_svc down to MongoDB.

Servers get OpenTelemetry's gRPC server interceptor (health checks and reflection excluded: probes
would drown the traces); channels get its client interceptors (`servicekit.client.open_channel`).
MongoDB commands become client spans only inside a traced call, never with the command document
(it may hold transcript text); the change feed's background polls make no spans at all.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc
import structlog
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pymongo import monitoring

log = structlog.get_logger("servicekit.tracing")

_configured: TracerProvider | None = None
_lock = threading.Lock()


def configure(service: str, endpoint: str) -> TracerProvider | None:
    """Exports this process's spans to `endpoint` (an OTLP/gRPC URL) as `service`; "" leaves tracing off.

    Call once, in `main()`, before any server or channel is made. Returns the provider (shut it
    down at exit to send the last spans), or None when tracing is off.
    """
    global _configured
    if not endpoint:
        return None
    with _lock:
        if _configured is not None:
            return _configured
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        trace.set_tracer_provider(provider)
        monitoring.register(MongoCommandTracer(trace.get_tracer("servicekit.mongodb")))
        _configured = provider
    log.info("tracing on", exporter="otlp", endpoint=endpoint)
    return provider


def enabled() -> bool:
    return _configured is not None


def shutdown() -> None:
    """Sends the spans still buffered (at most a few seconds), then stops exporting."""
    if _configured is not None:
        _configured.shutdown()


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The tracing interceptor for a server (first in the chain), or none when tracing is off."""
    if not enabled():
        return []
    untraced = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection."))
    # The instrumentation package ships no type hints.
    interceptor = aio_server_interceptor(filter_=filters.negate(untraced))  # type: ignore[no-untyped-call]
    return [interceptor]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that start a client span per call and send `traceparent`; none when off."""
    if not enabled():
        return []
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return interceptors


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the active span, for log lines; None outside a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class MongoCommandTracer(monitoring.CommandListener):
    """A client span per MongoDB command issued inside a traced call.

    PyMongo calls these hooks in the task that runs the command, so the active span is the
    caller's. Only the command's name, database and collection are recorded: the document itself
    may hold user or transcript text.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._spans: dict[tuple[Any, int], Span] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not trace.get_current_span().get_span_context().is_valid:
            return  # background work (change-feed polls, index checks): not part of any request
        collection = event.command.get(event.command_name)
        target = f"{event.database_name}.{collection}" if isinstance(collection, str) else event.database_name
        span = self._tracer.start_span(
            f"{event.command_name} {target}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "mongodb",
                "db.name": event.database_name,
                "db.operation": event.command_name,
                **({"db.mongodb.collection": collection} if isinstance(collection, str) else {}),
            },
        )
        self._spans[self._key(event)] = span

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        span = self._spans.pop(self._key(event), None)
        if span is not None:
            span.end()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        span = self._spans.pop(self._key(event), None)
        if span is not None:
            # The failure's class only: server error messages can quote the command.
            span.set_status(Status(StatusCode.ERROR, type(event.failure).__name__))
            span.end()

    @staticmethod
    def _key(
        event: monitoring.CommandStartedEvent
        | monitoring.CommandSucceededEvent
        | monitoring.CommandFailedEvent,
    ) -> tuple[Any, int]:
        # Request ids are unique per connection; the connection tells concurrent clients apart.
        return (event.connection_id, event.request_id)
