"""chat_svc settings, read once from the environment in `main()`."""

from __future__ import annotations

from pydantic import Field

from servicekit.settings import CommonSettings


class ChatSettings(CommonSettings):
    """Everything chat_svc reads from the environment (see `.env.example`)."""

    host: str = Field(default="127.0.0.1", validation_alias="CHAT_SVC_HOST")
    port: int = Field(default=50052, ge=0, le=65535, validation_alias="CHAT_SVC_PORT")
    # Prometheus metrics on CHAT_SVC_HOST at this port (`/metrics`); 0 picks a free one.
    metrics_port: int = Field(default=9472, ge=0, le=65535, validation_alias="CHAT_SVC_METRICS_PORT")
    agent_svc_address: str = Field(default="127.0.0.1:50051", validation_alias="AGENT_SVC_ADDRESS")
    agent_svc_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, validation_alias="AGENT_SVC_TIMEOUT_SECONDS"
    )
    mongodb_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, validation_alias="MONGODB_TIMEOUT_SECONDS"
    )
    watch_keepalive_seconds: float = Field(
        default=15.0, gt=0, le=300, validation_alias="WATCH_KEEPALIVE_SECONDS"
    )
    # Conversation watch streams one user may hold open at once on one replica (tabs, devices);
    # more is RESOURCE_EXHAUSTED with a QuotaFailure. Services are not counted. 0: no limit.
    watch_max_per_user: int = Field(default=20, ge=0, le=10_000, validation_alias="WATCH_MAX_PER_USER")
    # Real MongoDB blocks in getMore for up to this long; the embedded store answers at once, so the
    # feed sleeps this long between empty polls. It bounds the added delivery latency.
    change_stream_poll_seconds: float = Field(
        default=0.05, gt=0, le=5, validation_alias="CHANGE_STREAM_POLL_SECONDS"
    )
    conversations_page_size: int = Field(default=20, ge=1, le=100, validation_alias="CONVERSATIONS_PAGE_SIZE")
    conversations_page_size_max: int = Field(
        default=100, ge=1, le=1000, validation_alias="CONVERSATIONS_PAGE_SIZE_MAX"
    )
    # A voice or video conversation ends when its call ends (the LiveKit room finished); off, it
    # stays open for text and a later call.
    call_end_ends_conversation: bool = Field(default=True, validation_alias="CALL_END_ENDS_CONVERSATION")
    messages_page_size: int = Field(default=100, ge=1, le=500, validation_alias="MESSAGES_PAGE_SIZE")
    # The agent's replies in TEXT conversations and the summaries of calls (chat_svc.replies).
    reply_timeout_seconds: float = Field(default=60.0, gt=0, le=600, validation_alias="REPLY_TIMEOUT_SECONDS")
    reply_update_interval_seconds: float = Field(
        default=0.1, ge=0, le=5, validation_alias="REPLY_UPDATE_INTERVAL_SECONDS"
    )
    reply_history_max_messages: int = Field(
        default=20, ge=1, le=100, validation_alias="REPLY_HISTORY_MAX_MESSAGES"
    )
    reply_history_max_chars: int = Field(
        default=12_000, ge=100, le=60_000, validation_alias="REPLY_HISTORY_MAX_CHARS"
    )
    summary_timeout_seconds: float = Field(
        default=60.0, gt=0, le=600, validation_alias="SUMMARY_TIMEOUT_SECONDS"
    )
    summary_delay_seconds: float = Field(default=2.0, ge=0, le=60, validation_alias="SUMMARY_DELAY_SECONDS")
    messages_page_size_max: int = Field(default=500, ge=1, le=5000, validation_alias="MESSAGES_PAGE_SIZE_MAX")
