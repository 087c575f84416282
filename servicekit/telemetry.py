"""A process's telemetry in one call: tracing (when configured) and its Prometheus endpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import structlog

from servicekit import metrics, tracing

log = structlog.get_logger("servicekit.telemetry")


@contextlib.contextmanager
def running(service: str, metrics_host: str, metrics_port: int, otlp_endpoint: str) -> Iterator[int]:
    """Tracing on (if `otlp_endpoint`) and metrics served for the block; yields the metrics port.

    A metrics port that is taken is logged as an error and the service runs on without the
    endpoint: a second copy started by hand or by a test next to `make run` must still serve calls.
    (`make run` and the Kubernetes manifests give every process a port of its own.) On the way
    out the last spans are sent, so a stopping process's final calls are in the trace.
    """
    tracing.configure(service, otlp_endpoint)
    try:
        try:
            _, port = metrics.serve(metrics_host, metrics_port)
        except OSError as exc:
            log.error(
                "metrics endpoint NOT served: the port is not available",
                host=metrics_host,
                port=metrics_port,
                error=str(exc),
            )
            port = 0
        yield port
    finally:
        tracing.shutdown()
