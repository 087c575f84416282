"""What one client can make the edge hold: bodies, headers, time, connections, requests and memory.

Each bound answers something an outside caller could do to `make run` before it existed (issue 14):
a 300 MB body buffered whole by the JSON transcoder, 20,000 silent sockets living for an hour,
oversized headers reaching the services. The functions return pieces of the Envoy bootstrap that
`devrun.envoy_config` puts in place; nothing here knows about ports or upstreams.

How a limit shows itself to a client:
- body over its route's limit: 413 (the buffer filter), a JSON `google.rpc.Status` for REST;
- headers over `max_request_headers_kb`: 431;
- a connection that sends nothing: closed after `request_headers_timeout_seconds`; headers that
  trickle in: closed after the same time (Envoy's `request_headers_timeout`);
- too many requests from one address: 429 with `Retry-After` (RESOURCE_EXHAUSTED for gRPC);
- too many connections, or Envoy's heap near its bound: new connections are refused and idle ones
  are closed sooner (the overload manager).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KIB = 1024
MIB = 1024 * KIB

# The body every JSON API gets unless a field needs more: SendMessage's 4,000 characters are at most
# 24 kB of JSON (`\uXXXX` escapes), a token or room request a few hundred bytes.
DEFAULT_BODY_LIMIT = 64 * KIB
# Larger where a field needs it. Agent profiles: `instructions` of 20,000 characters may take 120 kB
# as escaped JSON. LiveKit's webhooks (issue 11, CallService): a few kB each; 1 MiB leaves room.
REST_BODY_LIMITS: tuple[tuple[str, int], ...] = (
    ("/v1/agents", 256 * KIB),
    ("/api/livekit/webhook", 1 * MIB),
)
GRPC_BODY_LIMITS: dict[str, int] = {
    "syntera.agent.v1.AgentService": 256 * KIB,
    "syntera.livekit.v1.CallService": 1 * MIB,
}

BUFFER_FILTER = "envoy.filters.http.buffer"
RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
_RATE_LIMIT_KEY = "remote_address"
_LOCAL_RATE_LIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"


@dataclass(frozen=True)
class EdgeLimits:
    """Bounds the edge puts on every client. The defaults are `make run`'s and production's.

    Attributes:
        max_request_headers_kb: Largest request header block; more is answered 431. Well under what
            the services accept as gRPC metadata (servicekit raises that to 32 KiB), so everything
            Envoy forwards fits.
        request_headers_timeout_seconds: A connection must deliver a whole request header block
            this soon after it opens (or after its previous request); a silent or trickling
            connection is closed.
        idle_timeout_seconds: A connection with no request in flight is closed after this long.
            Watch streams are requests in flight: they are not idle, whatever their length.
        request_timeout_seconds: The whole request (headers and body) must arrive within this.
        unary_idle_timeout_seconds: A call that is not a server stream is cut when nothing has
            moved on it for this long (a malformed gRPC frame would otherwise keep a call open on
            the edge and in a service until the one-hour stream idle limit). Server streams (the
            watches) keep that hour: they send keep-alives.
        max_connections: Downstream connections Envoy holds at once; more are refused.
        max_heap_bytes: Envoy's heap bound for the overload manager: near it, idle connections are
            closed sooner and keep-alive is turned off; at 95 % new requests get 503 and new
            connections are refused.
        rate_limit_per_second: Requests per second one client address may make on average.
        rate_limit_burst: Requests one client address may make at once before the average applies.
        rate_limit_clients: How many client addresses have their own bucket at once (least recently
            seen are forgotten first).
        max_concurrent_streams: HTTP/2 streams one connection may have open.
        connection_buffer_bytes: Bytes Envoy reads from one connection before it stops reading
            (its flow-control window), so a fast sender cannot fill memory.
        trusted_proxy_hops: Proxies in front of Envoy whose `x-forwarded-for` is trusted (an
            ingress or load balancer that terminates TLS). 0: the peer is the client. Behind a proxy
            that is not trusted every client would share the proxy's address, and its rate limit.
    """

    max_request_headers_kb: int = 16
    request_headers_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 60.0
    request_timeout_seconds: float = 30.0
    unary_idle_timeout_seconds: float = 60.0
    max_connections: int = 5000
    max_heap_bytes: int = 256 * MIB
    rate_limit_per_second: int = 50
    rate_limit_burst: int = 100
    rate_limit_clients: int = 10_000
    max_concurrent_streams: int = 100
    connection_buffer_bytes: int = 32 * KIB
    trusted_proxy_hops: int = 0

    def __post_init__(self) -> None:
        for name in (
            "max_request_headers_kb",
            "request_headers_timeout_seconds",
            "idle_timeout_seconds",
            "request_timeout_seconds",
            "unary_idle_timeout_seconds",
            "max_connections",
            "max_heap_bytes",
            "rate_limit_per_second",
            "rate_limit_burst",
            "rate_limit_clients",
            "max_concurrent_streams",
            "connection_buffer_bytes",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"EdgeLimits.{name} must be positive")
        if not 0 <= self.trusted_proxy_hops <= 5:
            raise ValueError("EdgeLimits.trusted_proxy_hops must be between 0 and 5")
        if self.max_request_headers_kb > 96:
            raise ValueError("EdgeLimits.max_request_headers_kb must be at most 96 (Envoy's own maximum)")


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _buffer_limit(max_bytes: int) -> dict[str, Any]:
    return {
        BUFFER_FILTER: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
            "buffer": {"max_request_bytes": max_bytes},
        }
    }


def grpc_route_limits(service: str) -> dict[str, Any]:
    """`typed_per_filter_config` of the gRPC routes of `service`: its body limit."""
    return _buffer_limit(GRPC_BODY_LIMITS.get(service, DEFAULT_BODY_LIMIT))


def grpc_routes(
    service: str, route: dict[str, Any], server_streams: Sequence[str], limits: EdgeLimits
) -> list[dict[str, Any]]:
    """The routes of one gRPC service: each server-streaming method on its own, then the rest.

    `route` is the service's route action. The streams keep the connection manager's long idle
    limit; every other call is cut once idle for `limits.unary_idle_timeout_seconds`.
    """
    per_filter = grpc_route_limits(service)
    streams = [
        {
            "name": f"{service}/{method}",
            "match": {"path": f"/{service}/{method}"},
            "route": route,
            "typed_per_filter_config": per_filter,
        }
        for method in server_streams
    ]
    unary = {
        "name": service,
        "match": {"prefix": f"/{service}/"},
        "route": route | {"idle_timeout": _duration(limits.unary_idle_timeout_seconds)},
        "typed_per_filter_config": per_filter,
    }
    return [*streams, unary]


def rest_routes(match: dict[str, Any], route: dict[str, Any]) -> list[dict[str, Any]]:
    """The REST routes before transcoding, one per body limit, longest prefix first.

    The body is measured as it arrives, before the transcoder reads any of it, so it is the route
    of the REST path (not the gRPC path the transcoder later routes on) that decides the limit.
    `match` is the REST match on `/` (its header matchers are kept); `route` its route action.
    """
    routes = [
        {
            "name": f"rest:{prefix}",
            "match": {**match, "prefix": prefix},
            "route": route,
            "typed_per_filter_config": _buffer_limit(limit),
        }
        for prefix, limit in sorted(REST_BODY_LIMITS, key=lambda item: -len(item[0]))
    ]
    routes.append(
        {
            "name": "rest-before-transcoding",
            "match": {**match, "prefix": "/"},
            "route": route,
            "typed_per_filter_config": _buffer_limit(DEFAULT_BODY_LIMIT),
        }
    )
    return routes


def http_filters() -> list[dict[str, Any]]:
    """The rate limit and body limit filters; they go before the JSON transcoder.

    The rate limit comes first, so a refused request costs no buffering. Both are configured per
    route and virtual host; the filter-level configuration only names them.
    """
    return [
        {
            "name": RATE_LIMIT_FILTER,
            "typed_config": {
                "@type": _LOCAL_RATE_LIMIT_TYPE,
                "stat_prefix": "edge_rate_limit",
            },
        },
        {
            "name": BUFFER_FILTER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": DEFAULT_BODY_LIMIT,
            },
        },
    ]


def virtual_host_limits(limits: EdgeLimits) -> dict[str, Any]:
    """Virtual-host settings: a token bucket per client address, 429 with Retry-After when empty."""
    per_client = {
        "max_tokens": limits.rate_limit_burst,
        "tokens_per_fill": limits.rate_limit_per_second,
        "fill_interval": "1s",
    }
    rate_limit = {
        "@type": _LOCAL_RATE_LIMIT_TYPE,
        "stat_prefix": "edge_rate_limit",
        # The default bucket is required; each client's own bucket is what decides.
        "token_bucket": {"max_tokens": 1_000_000, "tokens_per_fill": 1_000_000, "fill_interval": "1s"},
        "always_consume_default_token_bucket": False,
        # An empty value is a wildcard: one bucket per distinct client address.
        "rate_limits": [{"actions": [{"remote_address": {}}]}],
        "descriptors": [{"entries": [{"key": _RATE_LIMIT_KEY}], "token_bucket": per_client}],
        "max_dynamic_descriptors": limits.rate_limit_clients,
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "response_headers_to_add": [
            {
                # The bucket refills every second: a refused client may try again after one.
                "header": {"key": "retry-after", "value": "1"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        # UNAVAILABLE (the default) tells gRPC clients to retry at once, which is the opposite.
        "rate_limited_as_resource_exhausted": True,
    }
    return {"typed_per_filter_config": {RATE_LIMIT_FILTER: rate_limit}}


def connection_manager_limits(limits: EdgeLimits, http2_options: dict[str, Any]) -> dict[str, Any]:
    """HTTP connection manager settings: header size and count, timeouts, HTTP/2 stream limits.

    `http2_options` are the listener's other HTTP/2 options (keep-alive), kept as they are.
    """
    trusted = {"xff_num_trusted_hops": limits.trusted_proxy_hops} if limits.trusted_proxy_hops else {}
    return trusted | {
        "max_request_headers_kb": limits.max_request_headers_kb,
        "request_headers_timeout": _duration(limits.request_headers_timeout_seconds),
        "request_timeout": _duration(limits.request_timeout_seconds),
        "common_http_protocol_options": {
            "idle_timeout": _duration(limits.idle_timeout_seconds),
            "max_headers_count": 100,
            # Some servers read `x_user` as `x-user`: a client must not smuggle a header that way.
            "headers_with_underscores_action": "DROP_HEADER",
        },
        "http2_protocol_options": http2_options
        | {
            "max_concurrent_streams": limits.max_concurrent_streams,
            "initial_stream_window_size": 64 * KIB,
            "initial_connection_window_size": 1 * MIB,
        },
    }


def listener_limits(limits: EdgeLimits) -> dict[str, Any]:
    """Listener settings: its read buffer, and silent connections closed by the header timeout.

    Envoy's own request-header timer starts at the first byte, so a socket that never sends one
    would live until the idle timeout. The HTTP inspector waits for the first bytes before the
    connection reaches the HTTP layer; with the listener-filter timeout it closes silent sockets
    after the header timeout instead.
    """
    return {
        "per_connection_buffer_limit_bytes": limits.connection_buffer_bytes,
        "listener_filters": [
            {
                "name": "envoy.filters.listener.http_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3"
                    ".HttpInspector"
                },
            }
        ],
        "listener_filters_timeout": _duration(limits.request_headers_timeout_seconds),
        "continue_on_listener_filters_timeout": False,
    }


def overload_manager(limits: EdgeLimits) -> dict[str, Any]:
    """Envoy's overload manager: its heap bound and the global connection limit.

    As the heap fills, idle connections are closed sooner (down to 1 s), then keep-alive is turned
    off; at 95 % new requests get 503 and new connections are refused. Connections beyond
    `max_connections` are refused at accept, and from half of them on idle connections are closed
    sooner too (down to 1 s at 90 %).
    """
    heap = "envoy.resource_monitors.fixed_heap"
    connections = "envoy.resource_monitors.global_downstream_max_connections"
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": heap,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3"
                    ".FixedHeapConfig",
                    "max_heap_size_bytes": limits.max_heap_bytes,
                },
            },
            {
                "name": connections,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections"
                    ".v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": limits.max_connections,
                },
            },
        ],
        "actions": [
            {
                # Idle connections are what a client holding many connections keeps: as memory or
                # the connection limit runs short, they are closed sooner (down to 1 s).
                "name": "envoy.overload_actions.reduce_timeouts",
                "triggers": [
                    {"name": heap, "scaled": {"scaling_threshold": 0.80, "saturation_threshold": 0.95}},
                    {
                        "name": connections,
                        "scaled": {"scaling_threshold": 0.50, "saturation_threshold": 0.90},
                    },
                ],
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig",
                    "timer_scale_factors": [
                        {"timer": "HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_timeout": "1s"}
                    ],
                },
            },
            {
                "name": "envoy.overload_actions.shrink_heap",
                "triggers": [{"name": heap, "threshold": {"value": 0.90}}],
            },
            {
                "name": "envoy.overload_actions.disable_http_keepalive",
                "triggers": [{"name": heap, "threshold": {"value": 0.90}}],
            },
            {
                "name": "envoy.overload_actions.stop_accepting_requests",
                "triggers": [{"name": heap, "threshold": {"value": 0.95}}],
            },
        ],
        "loadshed_points": [
            {
                "name": "envoy.load_shed_points.tcp_listener_accept",
                "triggers": [{"name": heap, "threshold": {"value": 0.95}}],
            }
        ],
    }
