"""The domain's view of stored conversations and messages (no grpc, no protobuf).

Times are UTC microseconds since the epoch (int): the embedded store turns dates written by updates
into strings, and integers sort and compare the same everywhere.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from chat_svc.reply_records import Reply, Summary


def now_us() -> int:
    """The current UTC time in microseconds since the epoch."""
    return time.time_ns() // 1000


class Channel(enum.StrEnum):
    """How a conversation is held."""

    TEXT = "TEXT"
    VOICE = "VOICE"
    VIDEO = "VIDEO"

    @property
    def is_call(self) -> bool:
        return self is not Channel.TEXT


class Status(enum.StrEnum):
    """Where a conversation is in its life."""

    ACTIVE = "ACTIVE"
    ENDED = "ENDED"
    FAILED = "FAILED"


class Role(enum.StrEnum):
    """Who said something."""

    USER = "USER"
    AGENT = "AGENT"


class Source(enum.StrEnum):
    """How a message entered the conversation."""

    TEXT = "TEXT"
    TRANSCRIPT = "TRANSCRIPT"


@dataclass(frozen=True)
class TurnMetrics:
    """Per-turn latencies in microseconds; None when unknown."""

    end_of_turn_delay_us: int | None = None
    llm_time_to_first_token_us: int | None = None
    tts_time_to_first_byte_us: int | None = None


@dataclass(frozen=True)
class Conversation:
    """A stored conversation."""

    conversation_id: str
    user_id: str
    agent_id: str
    channel: Channel
    status: Status
    title: str
    room_name: str
    metadata: dict[str, str]
    create_time_us: int
    end_time_us: int | None = None
    duration_us: int | None = None
    request_id: str | None = None
    last_seq: int = 0
    summary: Summary | None = None


@dataclass(frozen=True)
class Message:
    """A stored message: typed text or a spoken turn."""

    message_id: str
    conversation_id: str
    seq: int
    revision: int
    role: Role
    source: Source
    text: str
    final: bool
    interrupted: bool
    sender_id: str
    create_time_us: int
    update_time_us: int
    segment_id: str | None = None
    request_id: str | None = None
    start_time_us: int | None = None
    end_time_us: int | None = None
    language: str = ""
    confidence: float = 0.0
    metrics: TurnMetrics = field(default_factory=TurnMetrics)
    reply: Reply | None = None


@dataclass(frozen=True)
class JoinGrant:
    """How a user joins a call, as agent_svc minted it."""

    token: str = field(repr=False)
    url: str
    room_name: str
    identity: str
    expire_time_us: int
    agent_name: str
