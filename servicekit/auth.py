"""Identity: HS256 JWTs carrying the user (`sub`) or a service (`role: service`).

No grpc here; the interceptor in `servicekit.interceptors` reads the header and calls `verify`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from servicekit.errors import unauthenticated

ALGORITHM = "HS256"
SERVICE_ROLE = "service"
# Tolerated clock difference between the minting and the verifying process.
CLOCK_SKEW_SECONDS = 30
# Set by the edge (Envoy) on every request it forwards, whatever the client sent: calls carrying it
# came from outside, where only user tokens are accepted.
EDGE_HEADER = "x-syntera-edge"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (subject is the user id) or a service (subject is its name)."""

    subject: str
    is_service: bool


def verify(token: str, secret: str) -> Principal:
    """Checks signature and expiry; raises an UNAUTHENTICATED DomainError otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp"]},
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise unauthenticated("the bearer token has expired", "TOKEN_EXPIRED") from None
    except jwt.InvalidTokenError:
        raise unauthenticated("the bearer token is not valid", "TOKEN_INVALID") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise unauthenticated("the bearer token has no subject", "TOKEN_INVALID")
    return Principal(subject=subject, is_service=claims.get("role") == SERVICE_ROLE)


def mint(secret: str, subject: str, *, service: bool = False, ttl_seconds: int = 3600) -> str:
    """Mints a token for a user, or for a service when `service` is true."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if service:
        claims["role"] = SERVICE_ROLE
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
