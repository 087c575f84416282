"""Bearer tokens for tests, signed with the secret every test process is started with."""

from __future__ import annotations

from servicekit import auth

JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"


def user_token(user_id: str, ttl_seconds: int = 600) -> str:
    return auth.mint(JWT_SECRET, user_id, ttl_seconds=ttl_seconds)


def service_token(name: str = "test-service", ttl_seconds: int = 600) -> str:
    return auth.mint(JWT_SECRET, name, service=True, ttl_seconds=ttl_seconds)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying `token`."""
    return (("authorization", f"Bearer {token}"),)
