"""Token claims, checked with livekit-api's own TokenVerifier, for each participant kind."""

from __future__ import annotations

import dataclasses
import json
import time

import jwt
import pytest
from livekit.api import TokenVerifier

from agent_svc.model import CallMedia, ParticipantKind
from agent_svc.tokens import TokenMinter, TokenPolicy, TokenSpec
from servicekit.errors import Violations
from tests.agent_svc.support import LIVEKIT_KEY, LIVEKIT_SECRET

pytestmark = pytest.mark.unit

POLICY = TokenPolicy(
    url="wss://lk.example.com",
    api_key=LIVEKIT_KEY,
    api_secret=LIVEKIT_SECRET,
    agent_name="syntera-voice",
    default_ttl_seconds=3600,
    min_ttl_seconds=60,
    max_ttl_seconds=86400,
    empty_timeout_seconds=120,
    max_participants=3,
)


def _spec(kind: ParticipantKind, media: CallMedia, identity: str, ttl: float | None = None) -> TokenSpec:
    return TokenSpec(
        conversation_id="c1",
        agent_id="a1",
        kind=kind,
        media=media,
        identity=identity,
        display_name="",
        ttl_seconds=ttl,
    )


def test_voice_user_publishes_microphone_only_and_carries_dispatch() -> None:
    minted = TokenMinter(POLICY).mint(_spec(ParticipantKind.USER, CallMedia.VOICE, "alice"))
    claims = TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(minted.token)
    assert claims.identity == "alice"
    assert claims.name == "alice"
    assert claims.kind == "standard"
    assert claims.video is not None
    assert claims.video.room == "conversation:c1"
    assert claims.video.room_join is True
    assert claims.video.can_publish_sources == ["microphone"]
    assert claims.video.can_subscribe is True
    config = claims.room_config
    assert config is not None
    assert config.name == "conversation:c1"
    assert (config.empty_timeout, config.max_participants) == (120, 3)
    assert [a.agent_name for a in config.agents] == ["syntera-voice"]
    assert json.loads(config.agents[0].metadata) == {"conversationId": "c1", "agentId": "a1"}
    assert minted.agent_name == "syntera-voice"
    assert minted.room_name == "conversation:c1"
    assert minted.url == POLICY.url


def test_video_user_publishes_camera_and_screen_share() -> None:
    minted = TokenMinter(POLICY).mint(_spec(ParticipantKind.USER, CallMedia.VIDEO, "bob"))
    claims = TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(minted.token)
    assert claims.video is not None
    assert claims.video.can_publish_sources == ["microphone", "camera", "screen_share", "screen_share_audio"]
    assert claims.video.can_subscribe is True


def test_agent_token_is_marked_agent_and_publishes_audio() -> None:
    minted = TokenMinter(POLICY).mint(_spec(ParticipantKind.AGENT, CallMedia.VOICE, "agent-a1"))
    claims = TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(minted.token)
    assert claims.kind == "agent"
    assert claims.identity == "agent-a1"
    assert claims.video is not None
    assert claims.video.can_publish_sources == ["microphone"]
    assert claims.video.can_subscribe is True
    assert claims.video.agent is True
    # The agent does not dispatch itself.
    assert claims.room_config is not None
    assert list(claims.room_config.agents) == []
    assert minted.agent_name == ""


def test_ttl_default_and_explicit() -> None:
    minter = TokenMinter(POLICY)
    now = time.time()
    default = minter.mint(_spec(ParticipantKind.USER, CallMedia.VOICE, "alice"))
    assert abs(default.expire_time.timestamp() - (now + 3600)) <= 2
    short = minter.mint(_spec(ParticipantKind.USER, CallMedia.VOICE, "alice", ttl=120))
    assert abs(short.expire_time.timestamp() - (now + 120)) <= 2


@pytest.mark.parametrize(("ttl", "ok"), [(59, False), (60, True), (86400, True), (86401, False), (-5, False)])
def test_ttl_bounds(ttl: float, ok: bool) -> None:
    violations = Violations()
    TokenMinter(POLICY).check_ttl(violations, "ttl", ttl)
    assert bool(violations) is not ok


def test_token_signed_with_other_secret_does_not_verify() -> None:
    minted = TokenMinter(POLICY).mint(_spec(ParticipantKind.USER, CallMedia.VOICE, "alice"))
    with pytest.raises(Exception, match="Signature"):
        TokenVerifier(LIVEKIT_KEY, "another-secret-that-is-long-enough-0123456789").verify(minted.token)


def test_policy_repr_hides_secret() -> None:
    assert LIVEKIT_SECRET not in repr(POLICY)


@pytest.mark.parametrize(
    ("kind", "media"),
    [
        (ParticipantKind.USER, CallMedia.VOICE),
        (ParticipantKind.USER, CallMedia.VIDEO),
        (ParticipantKind.AGENT, CallMedia.VOICE),
    ],
)
def test_kept_claims_are_what_access_token_writes_with_fresh_times(
    kind: ParticipantKind, media: CallMedia, monkeypatch: pytest.MonkeyPatch
) -> None:
    minter = TokenMinter(POLICY)
    spec = _spec(kind, media, "alice" if kind is ParticipantKind.USER else "agent-a1")
    first = minter.mint(spec)
    later = time.time() + 50
    monkeypatch.setattr(time, "time", lambda: later)
    second = minter.mint(spec)  # from the kept claims
    unchecked_times = {"verify_nbf": False}  # the clock was moved for the second token
    claims = [
        jwt.decode(t.token, LIVEKIT_SECRET, algorithms=["HS256"], options=unchecked_times)
        for t in (first, second)
    ]
    assert claims[1]["nbf"] == int(later)
    assert claims[1]["exp"] == int(later + 3600)
    assert second.expire_time.timestamp() == claims[1]["exp"]
    # Everything but the times is what livekit-api's AccessToken.to_jwt signs itself.
    reference = jwt.decode(minter._access(spec).to_jwt(), LIVEKIT_SECRET, algorithms=["HS256"])
    for each in (*claims, reference):
        each.pop("nbf")
        each.pop("exp")
    assert claims[0] == claims[1] == reference


@pytest.mark.parametrize(
    ("kind", "media", "display_name", "ttl"),
    [
        (ParticipantKind.USER, CallMedia.VOICE, "", None),
        (ParticipantKind.USER, CallMedia.VIDEO, 'Zoë ☃ "quoted"', 120.5),
        (ParticipantKind.AGENT, CallMedia.VOICE, "", 600),
    ],
)
def test_tokens_are_the_bytes_jwt_encode_writes(
    kind: ParticipantKind,
    media: CallMedia,
    display_name: str,
    ttl: float | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    minter = TokenMinter(POLICY)
    spec = TokenSpec(
        conversation_id="c1",
        agent_id="a1",
        kind=kind,
        media=media,
        identity="alice" if kind is ParticipantKind.USER else "agent-a1",
        display_name=display_name,
        ttl_seconds=ttl,
    )
    lifetime = ttl if ttl is not None else POLICY.default_ttl_seconds
    # The first token is PyJWT's own; the later ones are signed with the key it accepted.
    for moment in (time.time(), time.time() + 61.7, time.time() + 3600.0):
        monkeypatch.setattr(time, "time", lambda moment=moment: moment)
        claims = {**minter._claims_of(spec), "nbf": int(moment), "exp": int(moment + lifetime)}
        assert minter.mint(spec).token == jwt.encode(claims, LIVEKIT_SECRET, algorithm="HS256")


def test_a_secret_pyjwt_refuses_is_refused_for_every_token() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    minter = TokenMinter(dataclasses.replace(POLICY, api_secret=pem))
    for _ in range(2):
        with pytest.raises(jwt.InvalidKeyError):
            minter.mint(_spec(ParticipantKind.USER, CallMedia.VOICE, "alice"))
