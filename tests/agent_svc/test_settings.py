"""Start-up validation of agent_svc settings: LiveKit's URL and credentials, and the rest."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent_svc.settings import DEV_LIVEKIT_API_KEY, DEV_LIVEKIT_API_SECRET, DEV_LIVEKIT_URL
from tests.agent_svc.support import LIVEKIT_SECRET, make_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "url",
    ["https://livekit.example.com", "ws://livekit.example.com", "livekit.example.com", "wss://", "ftp://x"],
)
def test_livekit_url_must_be_wss_or_local_ws(url: str) -> None:
    with pytest.raises(ValidationError, match="LIVEKIT_URL"):
        make_settings(LIVEKIT_URL=url)


@pytest.mark.parametrize("url", ["ws://localhost:7880", "ws://127.0.0.1:7880", "wss://lk.example.com"])
def test_accepted_livekit_urls(url: str) -> None:
    assert make_settings(LIVEKIT_URL=url).livekit_url == url


@pytest.mark.parametrize("variable", ["LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"])
@pytest.mark.parametrize("dev_mode", [False, True])
def test_missing_livekit_variable_is_named(variable: str, dev_mode: bool) -> None:
    # In dev mode defaults apply only when nothing is configured; a half configuration is an error.
    with pytest.raises(ValidationError, match=variable) as caught:
        make_settings(**{variable: "", "SYNTERA_DEV_MODE": dev_mode})
    assert LIVEKIT_SECRET not in str(caught.value)


def test_dev_mode_without_livekit_uses_dev_server_defaults() -> None:
    settings = make_settings(
        SYNTERA_DEV_MODE=True, LIVEKIT_URL="", LIVEKIT_API_KEY="", LIVEKIT_API_SECRET="", CHAT_SVC_ADDRESS=""
    )
    secret = settings.livekit_api_secret.get_secret_value()
    assert (settings.livekit_url, settings.livekit_api_key, secret) == (
        DEV_LIVEKIT_URL,
        DEV_LIVEKIT_API_KEY,
        DEV_LIVEKIT_API_SECRET,
    )
    assert settings.livekit_dev_defaults


def test_chat_address_required_outside_dev_mode() -> None:
    with pytest.raises(ValidationError, match="CHAT_SVC_ADDRESS"):
        make_settings(CHAT_SVC_ADDRESS="")
    assert make_settings(CHAT_SVC_ADDRESS="", SYNTERA_DEV_MODE=True).chat_svc_address == ""


def test_token_ttl_default_must_lie_within_bounds() -> None:
    with pytest.raises(ValidationError, match="LIVEKIT_TOKEN_TTL_SECONDS"):
        make_settings(LIVEKIT_TOKEN_TTL_SECONDS=30)
    with pytest.raises(ValidationError, match="LIVEKIT_TOKEN_TTL_SECONDS"):
        make_settings(LIVEKIT_TOKEN_TTL_SECONDS=90000)


def test_secret_is_not_in_repr() -> None:
    settings = make_settings()
    assert LIVEKIT_SECRET not in repr(settings)
    assert LIVEKIT_SECRET not in str(settings)
