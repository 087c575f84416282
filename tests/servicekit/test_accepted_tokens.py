"""TokenPolicy remembers accepted tokens: only those exact tokens, only until they expire (unit)."""

from __future__ import annotations

import time

import pytest

from servicekit import auth
from servicekit.errors import DomainError

pytestmark = pytest.mark.unit

USER_SECRET = "user-secret-long-enough-0123456789abcdef"
SERVICE_SECRET = "service-secret-long-enough-0123456789abcdef"


def test_a_remembered_token_expires_like_any_other() -> None:
    policy = auth.TokenPolicy(user_secret=USER_SECRET, service_secret=SERVICE_SECRET)
    # Expired already, but within the tolerated clock difference for one more second.
    token = auth.mint(USER_SECRET, "alice", ttl_seconds=1 - auth.CLOCK_SKEW_SECONDS)
    assert policy.verify(token).subject == "alice"
    assert policy.verify(token).subject == "alice"  # remembered
    time.sleep(1.1)
    with pytest.raises(DomainError) as refused:
        policy.verify(token)
    assert refused.value.reason == "TOKEN_EXPIRED"


def test_a_token_with_another_signature_is_checked_on_its_own() -> None:
    policy = auth.TokenPolicy(user_secret=USER_SECRET, service_secret=SERVICE_SECRET)
    token = auth.mint(USER_SECRET, "alice")
    policy.verify(token)
    head, body, _ = token.split(".")
    forged = f"{head}.{body}.{auth.mint('another-secret-long-enough-0123456789', 'alice').split('.')[2]}"
    with pytest.raises(DomainError):
        policy.verify(forged)


def test_a_service_token_accepted_inside_is_still_refused_at_the_edge() -> None:
    policy = auth.TokenPolicy(user_secret=USER_SECRET, service_secret=SERVICE_SECRET)
    token = auth.mint(SERVICE_SECRET, "agent_svc", service=True)
    assert policy.verify(token).is_service
    with pytest.raises(DomainError) as refused:
        policy.verify(token, from_edge=True)
    assert refused.value.reason == "SERVICE_TOKEN_AT_EDGE"
