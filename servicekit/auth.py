"""Identity: HS256 JWTs carrying the user (`sub`) or a service (`role: service`).

Users and services sign with different secrets, and service tokens are refused on calls that came
through the public edge. No grpc here; the interceptor in `servicekit.interceptors` reads the
header and calls `TokenPolicy.verify`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jwt

from servicekit.errors import unauthenticated

ALGORITHM = "HS256"
SERVICE_ROLE = "service"
# Tolerated clock difference between the minting and the verifying process.
CLOCK_SKEW_SECONDS = 30
# Set by the edge (Envoy) on every request it forwards, whatever the client sent: calls carrying it
# came from outside, where only user tokens are accepted.
EDGE_HEADER = "x-syntera-edge"
# Accepted tokens a policy remembers (see `TokenPolicy._accepted`); about 3 MB at most.
_ACCEPTED_MAX = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (subject is the user id) or a service (subject is its name)."""

    subject: str
    is_service: bool


@dataclass(frozen=True)
class TokenPolicy:
    """Which tokens a service accepts: users' and services' signed with their own secrets.

    Attributes:
        user_secret: Signs user tokens (`SYNTERA_JWT_SECRET`).
        service_secret: Signs the tokens services send each other (`SYNTERA_SERVICE_JWT_SECRET`).
            Separate, so that whoever can mint user tokens (a dev secret in the repository, a
            leaked signing key of the login system) still cannot act as a service.
        max_ttl_seconds: The longest lifetime a token may have left; a token valid for longer is
            refused, so a stolen one cannot be used for years.
        audience: When set, user tokens must carry it as `aud`.
        issuer: When set, user tokens must carry it as `iss`.
    """

    user_secret: str = field(repr=False)
    service_secret: str = field(repr=False)
    max_ttl_seconds: int = 86_400
    audience: str = ""
    issuer: str = ""
    # Tokens that passed, with the moment they stop being acceptable: clients send the same token
    # call after call, and checking it again cost about a tenth of a token request's CPU. Keyed by
    # the whole token (signature included) and where it came from; refusals are never kept.
    _accepted: dict[tuple[str, bool], tuple[Principal, float]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def verify(self, token: str, *, from_edge: bool = False) -> Principal:
        """The caller a token names; an UNAUTHENTICATED DomainError for any token not acceptable.

        Args:
            token: The bearer token.
            from_edge: The call came through the public edge, where service tokens are refused:
                services call each other directly, never through Envoy.
        """
        key = (token, from_edge)
        accepted = self._accepted.get(key)
        if accepted is not None and time.time() < accepted[1]:
            return accepted[0]
        principal, expires = self._check(token, from_edge)
        if len(self._accepted) >= _ACCEPTED_MAX:
            self._accepted.clear()  # cheaper than LRU order on every call; refilled as tokens come
        # Acceptable until it expires, with the same tolerance `verify_claims` gives.
        self._accepted[key] = (principal, expires + CLOCK_SKEW_SECONDS)
        return principal

    def _check(self, token: str, from_edge: bool) -> tuple[Principal, float]:
        if _claims_role(token) == SERVICE_ROLE:
            if from_edge:
                raise unauthenticated(
                    "service tokens are not accepted from outside the mesh", "SERVICE_TOKEN_AT_EDGE"
                )
            principal, expires = verify_claims(
                token, self.service_secret, max_ttl_seconds=self.max_ttl_seconds
            )
            if not principal.is_service:
                raise unauthenticated("the bearer token is not valid", "TOKEN_INVALID")
            return principal, expires
        principal, expires = verify_claims(
            token,
            self.user_secret,
            max_ttl_seconds=self.max_ttl_seconds,
            audience=self.audience,
            issuer=self.issuer,
        )
        if principal.is_service:
            raise unauthenticated("the bearer token is not valid", "TOKEN_INVALID")
        return principal, expires


def verify(
    token: str,
    secret: str,
    *,
    max_ttl_seconds: int | None = None,
    audience: str = "",
    issuer: str = "",
) -> Principal:
    """Checks one token against one secret: signature, expiry and, when given, lifetime, `aud`, `iss`.

    Raises an UNAUTHENTICATED DomainError otherwise. `TokenPolicy.verify` picks the secret.
    """
    return verify_claims(token, secret, max_ttl_seconds=max_ttl_seconds, audience=audience, issuer=issuer)[0]


def verify_claims(
    token: str,
    secret: str,
    *,
    max_ttl_seconds: int | None = None,
    audience: str = "",
    issuer: str = "",
) -> tuple[Principal, float]:
    """`verify`, and the token's expiry (`exp`, seconds since the epoch)."""
    required = ["sub", "exp"] + (["aud"] if audience else []) + (["iss"] if issuer else [])
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience or None,
            issuer=issuer or None,
            options={"require": required, "verify_aud": bool(audience)},
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise unauthenticated("the bearer token has expired", "TOKEN_EXPIRED") from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
        raise unauthenticated("the bearer token is not for this service", "TOKEN_WRONG_AUDIENCE") from None
    except jwt.InvalidTokenError:
        raise unauthenticated("the bearer token is not valid", "TOKEN_INVALID") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise unauthenticated("the bearer token has no subject", "TOKEN_INVALID")
    expires = claims["exp"]
    if max_ttl_seconds is not None and (
        not isinstance(expires, int | float) or expires - time.time() > max_ttl_seconds + CLOCK_SKEW_SECONDS
    ):
        raise unauthenticated(
            f"the bearer token is valid for longer than {max_ttl_seconds} seconds", "TOKEN_LIFETIME_TOO_LONG"
        )
    return Principal(subject=subject, is_service=claims.get("role") == SERVICE_ROLE), float(expires)


def mint(
    secret: str,
    subject: str,
    *,
    service: bool = False,
    ttl_seconds: int = 3600,
    audience: str = "",
    issuer: str = "",
) -> str:
    """Mints a token for a user, or for a service when `service` is true (sign those with the
    service secret)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if service:
        claims["role"] = SERVICE_ROLE
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _claims_role(token: str) -> object:
    """The `role` a token claims, read without checking it: it only decides which secret checks it."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    return unverified.get("role")
