"""chat_svc's own Prometheus metrics (RPC metrics come from servicekit.metrics).

Open watch streams are `grpc_server_streams_open{grpc_method=~"Watch.*"}`, counted for every
server stream by servicekit's interceptor; what is measured here is what only chat_svc knows.
"""

from __future__ import annotations

import time

from prometheus_client import Histogram

from chat_svc.records import Message, Source
from servicekit.metrics import NAMESPACE

# A turn should be on screen well within a second of its report; the tail shows a slow feed.
_DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

DELIVERY_SECONDS = Histogram(
    "delivery_seconds",
    "From a message's last write (a transcript report, a typed message, an agent reply) to its "
    "sending on a live watch stream, by the message's source.",
    ["source"],
    namespace=NAMESPACE,
    subsystem="chat",
    buckets=_DELIVERY_BUCKETS,
)


def delivered_live(message: Message) -> None:
    """Records that a watcher was sent `message` from the change feed (replays are not counted).

    Replicas' clocks can differ by a little: a negative difference counts as zero.
    """
    seconds = max(0.0, time.time() - message.update_time_us / 1_000_000)
    DELIVERY_SECONDS.labels(_source_label(message.source)).observe(seconds)


def _source_label(source: Source) -> str:
    return source.value.lower()
