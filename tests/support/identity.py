"""Bearer tokens for tests, signed with the secrets every test process is started with."""

from __future__ import annotations

from servicekit import auth

JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"
# Services sign their own tokens with this one, never with the users' secret.
SERVICE_JWT_SECRET = "test-service-jwt-secret-long-enough-0123456789"
TOKEN_POLICY = auth.TokenPolicy(user_secret=JWT_SECRET, service_secret=SERVICE_JWT_SECRET)


def user_token(user_id: str, ttl_seconds: int = 600) -> str:
    return auth.mint(JWT_SECRET, user_id, ttl_seconds=ttl_seconds)


def service_token(name: str = "test-service", ttl_seconds: int = 600) -> str:
    return auth.mint(SERVICE_JWT_SECRET, name, service=True, ttl_seconds=ttl_seconds)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying `token`."""
    return (("authorization", f"Bearer {token}"),)
