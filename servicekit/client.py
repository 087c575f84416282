"""Outgoing calls between services: one channel per downstream, service identity, deadlines, retries."""

from __future__ import annotations

import json

import grpc

from servicekit import auth

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
    ]
}


def open_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel (the mesh runs on a private network) with retries enabled."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.service_config", json.dumps(_RETRY_SERVICE_CONFIG)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
        ],
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
