"""Minting LiveKit access tokens: identity, grants by participant kind, room configuration."""

from __future__ import annotations

import datetime as dt
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


class TokenMinter:
    """Mints tokens with livekit-api's AccessToken."""

    def __init__(self, policy: TokenPolicy) -> None:
        self._policy = policy
        self._claims: dict[TokenSpec, dict[str, Any]] = {}

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
        room configuration, their dict form) was most of a token's cost: they are built once per
        spec, and each token only gets its times and signature here.
        """
        policy = self._policy
        ttl = spec.ttl_seconds if spec.ttl_seconds is not None else policy.default_ttl_seconds
        claims = self._claims.get(spec)
        if claims is None:
            if len(self._claims) >= _CLAIMS_MAX:
                self._claims.clear()
            claims = self._claims[spec] = self._claims_of(spec)
        # Whole seconds, as AccessToken writes them.
        now = time.time()
        expires = int(now + ttl)
        token = jwt.encode({**claims, "nbf": int(now), "exp": expires}, policy.api_secret, algorithm="HS256")
        return MintedToken(
            token=token,
            url=policy.url,
            room_name=ids.room_name(spec.conversation_id),
            identity=spec.identity,
            kind=spec.kind,
            expire_time=dt.datetime.fromtimestamp(expires, tz=dt.UTC),
            agent_name=policy.agent_name if spec.kind is ParticipantKind.USER else "",
        )

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
