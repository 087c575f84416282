"""Outgoing calls between services: one channel per downstream, service identity, deadlines, retries."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc

from servicekit import auth, context, tracing
from servicekit.interceptors import REQUEST_ID_HEADER

# gRPC's own retry: only for codes that mean "nothing happened", with backoff. Every RPC we make
# also carries a deadline (see `call_options`), which bounds the retries too.
_RETRY_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    # Every address a name resolves to (a Kubernetes headless Service: every replica), not only
    # the first: calls spread over the replicas and survive one of them going away.
    "loadBalancingConfig": [{"round_robin": {}}],
}


def open_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel (the mesh runs on a private network) with retries enabled.

    Calls on it carry the current call's request id and, when tracing is on, its trace context.
    """
    return grpc.aio.insecure_channel(
        target,
        interceptors=[RequestIdForwarder(), *tracing.client_interceptors()],
        options=[
            ("grpc.service_config", json.dumps(_RETRY_SERVICE_CONFIG)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            # After the peer was away, reconnect attempts back off up to this (gRPC's default is
            # 120 s): a service that comes back is called again within seconds, not minutes.
            ("grpc.max_reconnect_backoff_ms", 5_000),
            # And start from this (gRPC's default is 1 s). A service started before the one it
            # calls (agent_svc before chat_svc, as `make run` and the tests start them) failed its
            # first attempt; with 1 s to the next, requests that came meanwhile failed UNAVAILABLE
            # after their own retries, though chat_svc was up.
            ("grpc.initial_reconnect_backoff_ms", 200),
        ],
    )


# One interceptor for both call shapes: the methods are generic per call, so the forwarder passes
# requests and responses through untouched (Any) whatever the call's message types.
class RequestIdForwarder(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Sends the request id of the call being served (`x-request-id`) on every call made for it.

    So one id is in the log lines of every service a request passes through. Calls made outside a
    served call (the voice worker's, background work) carry one only if the caller bound one.
    """

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request)

    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request)


def _with_request_id(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    request_id = context.current_request_id()
    metadata = list(details.metadata or ())
    if not request_id or any(key == REQUEST_ID_HEADER for key, _ in metadata):
        return details
    metadata.append((REQUEST_ID_HEADER, request_id))
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*metadata),
        details.credentials,
        details.wait_for_ready,
    )


class ServiceCredentials:
    """Mints and caches this service's own bearer token, renewing it well before it expires."""

    def __init__(self, secret: str, service_name: str, ttl_seconds: int = 600) -> None:
        self._secret = secret
        self._name = service_name
        self._ttl = ttl_seconds
        self._token = ""
        self._renew_at = 0.0

    def metadata(self, now: float) -> tuple[tuple[str, str], ...]:
        if now >= self._renew_at:
            self._token = auth.mint(self._secret, self._name, service=True, ttl_seconds=self._ttl)
            self._renew_at = now + self._ttl / 2
        return (("authorization", f"Bearer {self._token}"),)
