"""Bearer tokens for the benchmarks, signed with the secrets the benchmarks start their meshes with."""

from __future__ import annotations

from bench.harness import BENCH_JWT_SECRET
from servicekit import auth

# Services sign with their own secret, never with the users' one.
BENCH_SERVICE_JWT_SECRET = "bench-only-service-jwt-secret-0123456789abcdef"  # noqa: S105 - loopback benchmark


def as_user(user: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata of a call made by `user`."""
    return (("authorization", f"Bearer {auth.mint(BENCH_JWT_SECRET, user, ttl_seconds=3600)}"),)


def as_service(name: str = "voice_worker") -> tuple[tuple[str, str], ...]:
    """gRPC metadata of a call made by the service `name` (the voice worker reports transcripts)."""
    token = auth.mint(BENCH_SERVICE_JWT_SECRET, name, service=True, ttl_seconds=3600)
    return (("authorization", f"Bearer {token}"),)
