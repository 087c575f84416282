"""The voice worker's Prometheus metrics: calls active, the transcript outbox, delivery latency.

Served by `servicekit.metrics.serve` on VOICE_WORKER_METRICS_PORT. Calls run as threads of one
process, so one registry sees every call. Outbox figures are read from the senders' own counters
(their SQLite connections belong to the call's thread and cannot be queried from the scrape's).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from servicekit.metrics import NAMESPACE

CALLS_ACTIVE = Gauge(
    "calls_active",
    "Calls (LiveKit jobs) this worker is running.",
    namespace=NAMESPACE,
    subsystem="voice",
)
DELIVERY_SECONDS = Histogram(
    "transcript_delivery_seconds",
    "From a turn's arrival in the outbox to chat_svc acknowledging it (retries included).",
    namespace=NAMESPACE,
    subsystem="voice",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)


class OutboxState(Protocol):
    """What a sender tells about its outbox."""

    @property
    def pending(self) -> int: ...

    @property
    def pending_since(self) -> float | None:
        """`time.monotonic()` when the outbox last went from empty to holding turns; None if empty."""
        ...


class _OutboxCollector(Collector):
    """Sums the live senders' outboxes at scrape time."""

    def __init__(self) -> None:
        self._senders: weakref.WeakSet[OutboxState] = weakref.WeakSet()
        self._lock = threading.Lock()

    def track(self, sender: OutboxState) -> None:
        with self._lock:
            self._senders.add(sender)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            senders = list(self._senders)
        now = time.monotonic()
        since = [s.pending_since for s in senders if s.pending_since is not None]
        yield GaugeMetricFamily(
            f"{NAMESPACE}_voice_outbox_pending",
            "Turns in this worker's outboxes that chat_svc does not have yet.",
            value=sum(s.pending for s in senders),
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_voice_outbox_oldest_age_seconds",
            "How long the longest-waiting outbox has held undelivered turns (0 when all are empty).",
            value=max((now - t for t in since), default=0.0),
        )


OUTBOXES = _OutboxCollector()
REGISTRY.register(OUTBOXES)


def count_calls(active: Callable[[], int]) -> None:
    """Reads the number of calls from `active` at every scrape."""
    CALLS_ACTIVE.set_function(active)
