"""Minting LiveKit access tokens: identity, grants by participant kind, room configuration."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from livekit import api as lk_api
from livekit.protocol import agent_dispatch as lk_dispatch
from livekit.protocol import room as lk_room

from agent_svc.model import CallMedia, MintedToken, ParticipantKind, TrackSource
from servicekit import ids
from servicekit.errors import Violations

_USER_SOURCES = {
    CallMedia.VOICE: (TrackSource.MICROPHONE,),
    CallMedia.VIDEO: (
        TrackSource.MICROPHONE,
        TrackSource.CAMERA,
        TrackSource.SCREEN_SHARE,
        TrackSource.SCREEN_SHARE_AUDIO,
    ),
}
# The agent speaks through an audio track LiveKit Agents publishes with the microphone source.
_AGENT_SOURCES = (TrackSource.MICROPHONE,)
MAX_DISPLAY_NAME = 128


@dataclass(frozen=True)
class TokenPolicy:
    """Server-side token settings.

    Attributes:
        url: The LiveKit URL clients connect to.
        api_key: The LiveKit API key (the token's issuer).
        api_secret: The LiveKit API secret (signs tokens; never logged or returned).
        agent_name: The voice agent's registered name, dispatched through the token's room config.
        default_ttl_seconds: TTL when the request names none.
        min_ttl_seconds: Shortest TTL a request may ask for.
        max_ttl_seconds: Longest TTL a request may ask for.
        empty_timeout_seconds: How long LiveKit keeps an empty room.
        max_participants: Room size limit (0 = LiveKit's default, unlimited). LiveKit counts users
            only: agent participants always get in.
    """

    url: str
    api_key: str
    api_secret: str
    agent_name: str
    default_ttl_seconds: int
    min_ttl_seconds: int
    max_ttl_seconds: int
    empty_timeout_seconds: int
    max_participants: int

    def __repr__(self) -> str:  # the secret must not reach a log through a repr
        return f"TokenPolicy(url={self.url!r}, agent_name={self.agent_name!r})"


@dataclass(frozen=True)
class TokenSpec:
    """What to mint; already authorised by the caller of `TokenMinter.mint`."""

    conversation_id: str
    agent_id: str
    kind: ParticipantKind
    media: CallMedia
    identity: str
    display_name: str
    ttl_seconds: float | None


# Token specs whose claims are kept (see `TokenMinter.mint`); dropped all at once when full.
_CLAIMS_MAX = 10_000
# The JOSE header PyJWT writes for HS256 (its keys sorted, no spaces), base64url-encoded.
_HS256_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
# What jwt.encode signs a payload's JSON with (jwt.encode = its JSON, then PyJWS.encode).
_JWS = jwt.PyJWS()


class TokenMinter:
    """Mints tokens with livekit-api's AccessToken."""

    def __init__(self, policy: TokenPolicy) -> None:
        self._policy = policy
        # Each spec's claims as JSON, without the closing brace (see `mint`).
        self._claims: dict[TokenSpec, str] = {}
        # The secret's HMAC state, once PyJWT has accepted the secret (see `_sign`).
        self._hmac: hmac.HMAC | None = None

    @property
    def policy(self) -> TokenPolicy:
        return self._policy

    def check_ttl(self, violations: Violations, field_path: str, ttl_seconds: float | None) -> None:
        """Adds a violation when a requested TTL lies outside the configured bounds."""
        if ttl_seconds is None:
            return
        low, high = self._policy.min_ttl_seconds, self._policy.max_ttl_seconds
        if not low <= ttl_seconds <= high:
            violations.add(field_path, f"must be between {low}s and {high}s")

    def mint(self, spec: TokenSpec) -> MintedToken:
        """Builds and signs the token for `spec`.

        AccessToken's claims depend only on the spec and the policy, and building them (grants,
        room configuration, their dict form, then their JSON) was most of a token's cost: they are
        built once per spec, and each token only gets its times and signature here.
        """
        policy = self._policy
        ttl = spec.ttl_seconds if spec.ttl_seconds is not None else policy.default_ttl_seconds
        claims = self._claims.get(spec)
        if claims is None:
            if len(self._claims) >= _CLAIMS_MAX:
                self._claims.clear()
            claims = self._claims[spec] = _json_open(self._claims_of(spec))
        # Whole seconds, as AccessToken writes them; last, as in `{**claims, "nbf": .., "exp": ..}`.
        now = time.time()
        expires = int(now + ttl)
        token = self._sign(f'{claims},"nbf":{int(now)},"exp":{expires}}}')
        return MintedToken(
            token=token,
            url=policy.url,
            room_name=ids.room_name(spec.conversation_id),
            identity=spec.identity,
            kind=spec.kind,
            expire_time=dt.datetime.fromtimestamp(expires, tz=dt.UTC),
            agent_name=policy.agent_name if spec.kind is ParticipantKind.USER else "",
        )

    def _sign(self, payload: str) -> str:
        """The HS256 JWT of `payload` (JSON), as jwt.encode(claims, api_secret, "HS256") writes it.

        PyJWT checks the secret (refusing one that looks like a PEM or JWK key, warning when it is
        short) and derives its HMAC key on every token it signs: 14 of the 16 µs minting took. The
        secret never changes, so PyJWT signs tokens until it has accepted it once, and from then on
        the same header and payload are signed here with the same key (a test compares the tokens
        with jwt.encode's).
        """
        if self._hmac is None:
            token = _JWS.encode(payload.encode(), self._policy.api_secret, algorithm="HS256")
            self._hmac = hmac.new(self._policy.api_secret.encode(), digestmod=hashlib.sha256)
            return token
        signing_input = _HS256_HEADER + b"." + _base64url(payload.encode())
        mac = self._hmac.copy()
        mac.update(signing_input)
        return (signing_input + b"." + _base64url(mac.digest())).decode("ascii")

    def _claims_of(self, spec: TokenSpec) -> dict[str, Any]:
        """The claims livekit-api's AccessToken writes for `spec`, without their times."""
        access = self._access(spec)
        # What AccessToken.to_jwt signs, less `nbf` and `exp`, which `mint` sets for each token.
        return {**access.claims.asdict(), "sub": access.identity, "iss": self._policy.api_key}

    def _access(self, spec: TokenSpec) -> lk_api.AccessToken:
        """livekit-api's AccessToken for `spec` (its TTL is the policy's; `mint` sets the times)."""
        policy = self._policy
        room = ids.room_name(spec.conversation_id)
        sources: tuple[TrackSource, ...]
        if spec.kind is ParticipantKind.AGENT:
            sources = _AGENT_SOURCES
            dispatches: list[lk_dispatch.RoomAgentDispatch] = []
        else:
            sources = _USER_SOURCES[spec.media]
            # Carried in the token so LiveKit dispatches the agent when this join creates the room.
            dispatches = [
                lk_dispatch.RoomAgentDispatch(
                    agent_name=policy.agent_name,
                    metadata=ids.dispatch_metadata(spec.conversation_id, spec.agent_id),
                )
            ]
        grants = lk_api.VideoGrants(
            room_join=True,
            room=room,
            can_publish=True,
            can_publish_sources=[source.value for source in sources],
            can_subscribe=True,
            can_publish_data=True,
            # Marks the participant as an agent in the grants too, as LiveKit Agents' own tokens do.
            agent=True if spec.kind is ParticipantKind.AGENT else None,
        )
        config = lk_room.RoomConfiguration(
            name=room,
            empty_timeout=policy.empty_timeout_seconds,
            max_participants=policy.max_participants,
            agents=dispatches,
        )
        return (
            lk_api.AccessToken(policy.api_key, policy.api_secret)
            .with_identity(spec.identity)
            .with_name(spec.display_name or spec.identity)
            .with_kind("agent" if spec.kind is ParticipantKind.AGENT else "standard")
            .with_grants(grants)
            .with_room_config(config)
            .with_ttl(dt.timedelta(seconds=policy.default_ttl_seconds))
        )


def _json_open(claims: dict[str, Any]) -> str:
    """`claims` as PyJWT writes a payload (compact JSON), without the closing brace: the times
    follow. Never empty: the claims always name the subject and issuer."""
    text = json.dumps(claims, separators=(",", ":"))
    return text[:-1]


def _base64url(data: bytes) -> bytes:
    """Base64url without padding, as JWTs are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")
