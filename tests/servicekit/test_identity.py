"""Who may call: users and services with their own secrets, bounded lifetimes, `aud`/`iss` when
configured, no service identity from outside; and the settings that say so (issue 14, point 3)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from servicekit import auth
from servicekit.errors import DomainError, ErrorKind
from servicekit.settings import DEV_JWT_SECRET, DEV_SERVICE_JWT_SECRET, CommonSettings, is_loopback
from tests.support.identity import JWT_SECRET, SERVICE_JWT_SECRET, TOKEN_POLICY, service_token, user_token

pytestmark = pytest.mark.unit

AUDIENCE_POLICY = auth.TokenPolicy(
    user_secret=JWT_SECRET,
    service_secret=SERVICE_JWT_SECRET,
    audience="syntera-api",
    issuer="https://login.example",
)


def _refused(policy: auth.TokenPolicy, token: str, *, from_edge: bool = False) -> str:
    with pytest.raises(DomainError) as caught:
        policy.verify(token, from_edge=from_edge)
    assert caught.value.kind == ErrorKind.UNAUTHENTICATED
    return caught.value.reason


def _forged(secret: str, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "mallory", "iat": now, "exp": now + 600, **claims}, secret, algorithm="HS256")


def test_users_and_services_are_told_apart_by_their_secrets() -> None:
    assert TOKEN_POLICY.verify(user_token("alice")) == auth.Principal("alice", is_service=False)
    assert TOKEN_POLICY.verify(service_token("chat_svc")) == auth.Principal("chat_svc", is_service=True)
    # Whoever holds the users' secret cannot claim to be a service, nor the reverse.
    assert _refused(TOKEN_POLICY, _forged(JWT_SECRET, role="service")) == "TOKEN_INVALID"
    assert _refused(TOKEN_POLICY, _forged(SERVICE_JWT_SECRET)) == "TOKEN_INVALID"


def test_service_tokens_are_refused_on_calls_from_the_edge() -> None:
    assert _refused(TOKEN_POLICY, service_token("chat_svc"), from_edge=True) == "SERVICE_TOKEN_AT_EDGE"
    assert TOKEN_POLICY.verify(user_token("alice"), from_edge=True).subject == "alice"


def test_a_token_valid_for_longer_than_the_maximum_is_refused() -> None:
    forever = _forged(JWT_SECRET, exp=253402300799)  # 9999-12-31
    assert _refused(TOKEN_POLICY, forever) == "TOKEN_LIFETIME_TOO_LONG"
    assert _refused(TOKEN_POLICY, user_token("alice", ttl_seconds=TOKEN_POLICY.max_ttl_seconds + 600)) == (
        "TOKEN_LIFETIME_TOO_LONG"
    )
    assert (
        TOKEN_POLICY.verify(user_token("alice", ttl_seconds=TOKEN_POLICY.max_ttl_seconds)).subject == "alice"
    )
    assert _refused(TOKEN_POLICY, user_token("alice", ttl_seconds=-120)) == "TOKEN_EXPIRED"


def test_audience_and_issuer_are_required_when_configured() -> None:
    good = auth.mint(JWT_SECRET, "alice", audience="syntera-api", issuer="https://login.example")
    assert AUDIENCE_POLICY.verify(good).subject == "alice"
    assert _refused(AUDIENCE_POLICY, user_token("alice")) == "TOKEN_INVALID"  # neither claim
    wrong_audience = auth.mint(JWT_SECRET, "alice", audience="another-api", issuer="https://login.example")
    assert _refused(AUDIENCE_POLICY, wrong_audience) == "TOKEN_WRONG_AUDIENCE"
    wrong_issuer = auth.mint(JWT_SECRET, "alice", audience="syntera-api", issuer="https://evil.example")
    assert _refused(AUDIENCE_POLICY, wrong_issuer) == "TOKEN_WRONG_AUDIENCE"
    # Not configured: not checked.
    assert TOKEN_POLICY.verify(good).subject == "alice"


def _settings(**env: Any) -> CommonSettings:
    return CommonSettings(_env_file=None, **env)  # type: ignore[call-arg]


def test_outside_dev_mode_both_secrets_are_required_long_and_different() -> None:
    both = {"SYNTERA_JWT_SECRET": JWT_SECRET, "SYNTERA_SERVICE_JWT_SECRET": SERVICE_JWT_SECRET}
    settings = _settings(**both)
    assert settings.token_policy() == TOKEN_POLICY
    with pytest.raises(ValidationError, match="SYNTERA_SERVICE_JWT_SECRET must be set"):
        _settings(SYNTERA_JWT_SECRET=JWT_SECRET)
    with pytest.raises(ValidationError, match="SYNTERA_SERVICE_JWT_SECRET must be at least 32"):
        _settings(SYNTERA_JWT_SECRET=JWT_SECRET, SYNTERA_SERVICE_JWT_SECRET="short")
    with pytest.raises(ValidationError, match="must differ"):
        _settings(SYNTERA_JWT_SECRET=JWT_SECRET, SYNTERA_SERVICE_JWT_SECRET=JWT_SECRET)


def test_secrets_never_show_in_settings_output() -> None:
    settings = _settings(SYNTERA_JWT_SECRET=JWT_SECRET, SYNTERA_SERVICE_JWT_SECRET=SERVICE_JWT_SECRET)
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert JWT_SECRET not in text
        assert SERVICE_JWT_SECRET not in text


def test_dev_mode_uses_two_public_dev_secrets_and_loopback_only() -> None:
    settings = _settings(SYNTERA_DEV_MODE="true")
    assert settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert settings.service_jwt_secret.get_secret_value() == DEV_SERVICE_JWT_SECRET
    assert DEV_JWT_SECRET != DEV_SERVICE_JWT_SECRET
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    for public in ("0.0.0.0", "::", "10.0.0.5", "example.com"):  # noqa: S104 - the addresses refused
        assert not is_loopback(public)


@pytest.mark.parametrize(
    ("module", "cls", "variable"),
    [
        ("agent_svc.settings", "AgentSettings", "AGENT_SVC_HOST"),
        ("chat_svc.settings", "ChatSettings", "CHAT_SVC_HOST"),
    ],
)
def test_a_service_in_dev_mode_refuses_to_listen_beyond_loopback(
    module: str, cls: str, variable: str
) -> None:
    settings_class = getattr(__import__(module, fromlist=[cls]), cls)
    with pytest.raises(ValidationError, match=f"{variable}=0.0.0.0: dev mode listens on loopback"):
        settings_class(_env_file=None, SYNTERA_DEV_MODE="true", **{variable: "0.0.0.0"})  # noqa: S104
    assert settings_class(_env_file=None, SYNTERA_DEV_MODE="true", **{variable: "127.0.0.1"}).dev_mode


def test_every_secret_setting_is_hidden_from_output() -> None:
    from agent_svc.settings import AgentSettings
    from voice_worker.settings import VoiceWorkerSettings

    livekit_secret = "livekit-secret-that-must-not-show-0123456789"
    llm_key = "llm-key-that-must-not-show-0123456789"
    common = {"SYNTERA_JWT_SECRET": JWT_SECRET, "SYNTERA_SERVICE_JWT_SECRET": SERVICE_JWT_SECRET}
    livekit = {
        "LIVEKIT_URL": "wss://lk.example.com",
        "LIVEKIT_API_KEY": "key",
        "LIVEKIT_API_SECRET": livekit_secret,
    }
    agent = AgentSettings(_env_file=None, CHAT_SVC_ADDRESS="127.0.0.1:1", **common, **livekit)  # type: ignore[call-arg]
    worker = VoiceWorkerSettings(_env_file=None, LLM_API_KEY=llm_key, **common, **livekit)  # type: ignore[call-arg]
    for settings in (agent, worker):
        for text in (repr(settings), str(settings), settings.model_dump_json()):
            assert livekit_secret not in text
            assert llm_key not in text
            assert JWT_SECRET not in text
    assert agent.livekit_api_secret.get_secret_value() == livekit_secret
    assert worker.language_models("key", worker.livekit_api_secret).api_key == llm_key
