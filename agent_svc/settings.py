"""agent_svc settings, read from the environment once at start-up.

LiveKit configuration: the URL must be `wss://` (or `ws://` for a local server), and credentials
are required outside dev mode. In dev mode with nothing
configured, the LiveKit dev-server defaults are used and `app.main` says so loudly.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from pydantic import Field, SecretStr, model_validator

from llmkit.settings import LanguageModelSettings
from servicekit.settings import CommonSettings

DEV_LIVEKIT_URL = "ws://localhost:7880"
DEV_LIVEKIT_API_KEY = "devkey"
DEV_LIVEKIT_API_SECRET = "secret"  # noqa: S105 - the public default of `livekit-server --dev`
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class AgentSettings(CommonSettings, LanguageModelSettings):
    """Settings of agent_svc (env names are part of the run contract; see .env.example).

    The language-model settings (`LanguageModelSettings`) are the voice worker's: text replies and
    summaries use the model a call would use.
    """

    host: str = Field(default="127.0.0.1", validation_alias="AGENT_SVC_HOST")
    port: int = Field(default=50051, ge=0, le=65535, validation_alias="AGENT_SVC_PORT")
    # Server processes sharing AGENT_SVC_PORT (SO_REUSEPORT; the kernel spreads connections over
    # them): one Python process serves about one core. 0 means one per CPU. The first process also
    # runs the background work (call records, reconciliation, agent re-dispatch) and serves
    # AGENT_SVC_METRICS_PORT; the others serve only calls, their metrics on ports of their own.
    workers: int = Field(default=1, ge=0, le=64, validation_alias="AGENT_SVC_WORKERS")
    # Prometheus metrics on AGENT_SVC_HOST at this port (`/metrics`); 0 picks a free one.
    metrics_port: int = Field(default=9471, ge=0, le=65535, validation_alias="AGENT_SVC_METRICS_PORT")

    livekit_url: str = Field(default="", validation_alias="LIVEKIT_URL")
    livekit_api_key: str = Field(default="", validation_alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(default=SecretStr(""), validation_alias="LIVEKIT_API_SECRET")
    livekit_agent_name: str = Field(
        default="syntera-voice",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        validation_alias="LIVEKIT_AGENT_NAME",
    )
    livekit_token_ttl_seconds: int = Field(default=3600, validation_alias="LIVEKIT_TOKEN_TTL_SECONDS")
    livekit_token_ttl_min_seconds: int = Field(
        default=60, ge=1, validation_alias="LIVEKIT_TOKEN_TTL_MIN_SECONDS"
    )
    livekit_token_ttl_max_seconds: int = Field(
        default=86400, ge=1, validation_alias="LIVEKIT_TOKEN_TTL_MAX_SECONDS"
    )
    livekit_room_empty_timeout_seconds: int = Field(
        default=300, ge=0, le=86400, validation_alias="LIVEKIT_ROOM_EMPTY_TIMEOUT_SECONDS"
    )
    livekit_room_max_participants: int = Field(
        default=4, ge=0, le=1000, validation_alias="LIVEKIT_ROOM_MAX_PARTICIPANTS"
    )
    livekit_api_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, validation_alias="LIVEKIT_API_TIMEOUT_SECONDS"
    )

    # The deployment's call limits (see agent_svc/quota.py); 0 means unlimited. Defaults: the limits
    # of LiveKit's free tier, which counts per project.
    quota_max_concurrent_agent_sessions: int = Field(
        default=5, ge=0, le=100_000, validation_alias="QUOTA_MAX_CONCURRENT_AGENT_SESSIONS"
    )
    quota_agent_minutes_per_month: int = Field(
        default=1000, ge=0, le=100_000_000, validation_alias="QUOTA_AGENT_MINUTES_PER_MONTH"
    )
    quota_participant_minutes_per_month: int = Field(
        default=5000, ge=0, le=100_000_000, validation_alias="QUOTA_PARTICIPANT_MINUTES_PER_MONTH"
    )
    call_admission_hold_seconds: float = Field(
        default=120.0, gt=0, le=3600, validation_alias="CALL_ADMISSION_HOLD_SECONDS"
    )
    # 0 turns reconciliation off (a LiveKit server shared with rooms that are not ours to list).
    call_reconcile_seconds: float = Field(
        default=10.0, ge=0, le=3600, validation_alias="CALL_RECONCILE_SECONDS"
    )
    agent_redispatch: bool = Field(default=True, validation_alias="AGENT_REDISPATCH")
    # A call whose newest room session has a user and no agent yet gets one dispatched after this
    # long (the token's own dispatch is dropped when no worker is registered, as after a LiveKit
    # restart). Shorter brings the agent back sooner; too short may race the normal first dispatch.
    agent_join_grace_seconds: float = Field(
        default=10.0, gt=0, le=300, validation_alias="AGENT_JOIN_GRACE_SECONDS"
    )

    # Text replies and summaries (GenerateReply, GenerateSummary).
    reply_stall_seconds: float = Field(
        default=15.0, gt=0, le=300, validation_alias="LLM_STALL_TIMEOUT_SECONDS"
    )
    reply_timeout_seconds: float = Field(
        default=120.0, gt=0, le=3600, validation_alias="AGENT_SVC_REPLY_TIMEOUT_SECONDS"
    )

    chat_svc_address: str = Field(default="", validation_alias="CHAT_SVC_ADDRESS")
    chat_svc_timeout_seconds: float = Field(
        default=3.0, gt=0, le=60, validation_alias="CHAT_SVC_TIMEOUT_SECONDS"
    )
    # Conversations whose facts (owner, agent, channel) are kept between tokens while chat_svc's
    # stream of conversation ends is followed (agent_svc/conversation_cache.py); 0 turns it off and
    # every token asks chat_svc.
    conversation_cache_size: int = Field(
        default=100_000, ge=0, le=10_000_000, validation_alias="AGENT_SVC_CONVERSATION_CACHE_SIZE"
    )

    @property
    def worker_count(self) -> int:
        """How many server processes AGENT_SVC_WORKERS asks for (0: one per CPU)."""
        return self.workers or os.cpu_count() or 1

    @property
    def livekit_dev_defaults(self) -> bool:
        """True when tokens are minted for the LiveKit dev server's well-known credentials."""
        dev = (DEV_LIVEKIT_URL, DEV_LIVEKIT_API_KEY, DEV_LIVEKIT_API_SECRET)
        return (self.livekit_url, self.livekit_api_key, self.livekit_api_secret.get_secret_value()) == dev

    @model_validator(mode="after")
    def _validate_livekit(self) -> AgentSettings:
        configured = [self.livekit_url, self.livekit_api_key, self.livekit_api_secret]
        if self.dev_mode and not any(configured):
            self.livekit_url = DEV_LIVEKIT_URL
            self.livekit_api_key = DEV_LIVEKIT_API_KEY
            self.livekit_api_secret = SecretStr(DEV_LIVEKIT_API_SECRET)
        for name, value in (
            ("LIVEKIT_URL", self.livekit_url),
            ("LIVEKIT_API_KEY", self.livekit_api_key),
            ("LIVEKIT_API_SECRET", self.livekit_api_secret.get_secret_value()),
        ):
            if not value:
                raise ValueError(f"{name} must be set (or leave all LiveKit variables empty in dev mode)")
        _check_livekit_url(self.livekit_url)
        if not self.livekit_token_ttl_min_seconds <= self.livekit_token_ttl_seconds:
            raise ValueError("LIVEKIT_TOKEN_TTL_SECONDS must not be below LIVEKIT_TOKEN_TTL_MIN_SECONDS")
        if not self.livekit_token_ttl_seconds <= self.livekit_token_ttl_max_seconds:
            raise ValueError("LIVEKIT_TOKEN_TTL_SECONDS must not exceed LIVEKIT_TOKEN_TTL_MAX_SECONDS")
        if self.port == 0 and self.worker_count > 1:
            raise ValueError("AGENT_SVC_WORKERS above 1 needs a fixed AGENT_SVC_PORT (the workers share it)")
        if not self.chat_svc_address and not self.dev_mode:
            raise ValueError(
                "CHAT_SVC_ADDRESS must be set: conversation ownership is checked against chat_svc "
                "(it may be empty only with SYNTERA_DEV_MODE=true)"
            )
        return self


def _check_livekit_url(url: str) -> None:
    """`wss://host[:port]`, or `ws://` only for a server on this machine (no TLS on the wire otherwise)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("wss", "ws") or not parsed.hostname:
        raise ValueError("LIVEKIT_URL must be a wss:// URL (ws:// only for localhost)")
    if parsed.scheme == "ws" and parsed.hostname not in _LOCAL_HOSTS:
        raise ValueError("LIVEKIT_URL must use wss:// unless the LiveKit server is on localhost")
