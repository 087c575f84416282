"""The domain's view of stored conversations and messages (no grpc, no protobuf).

Times are UTC microseconds since the epoch (int): the embedded store turns dates written by updates
into strings, and integers sort and compare the same everywhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from chat_svc.reply_records import Reply, Summary

# Re-exported: one clock for every chat_svc module (servicekit.times is the mesh's home for time).
from servicekit.times import now_us as now_us


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
    transcription_delay_us: int | None = None


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
    call: Call | None = None


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


class CallState(enum.StrEnum):
    """Where a call is: waiting for its user, active (a user is in the room), ended."""

    WAITING = "WAITING"
    ACTIVE = "ACTIVE"
    ENDED = "ENDED"


class CallEndReason(enum.StrEnum):
    USER_LEFT = "USER_LEFT"
    NO_SHOW = "NO_SHOW"
    HUNG_UP = "HUNG_UP"
    ROOM_LOST = "ROOM_LOST"


class ParticipantKind(enum.StrEnum):
    USER = "USER"
    AGENT = "AGENT"


@dataclass(frozen=True)
class CallParticipant:
    """One connection to a call's room; `leave_time_us` is None while connected."""

    identity: str
    kind: ParticipantKind
    join_time_us: int
    leave_time_us: int | None = None


@dataclass(frozen=True)
class Call:
    """A call's record as agent_svc reported it (agent_svc folds it from LiveKit's webhooks).

    `revision` 0 is the record chat_svc writes itself when the call is set up; agent_svc's
    records start at 1 and only a higher revision replaces a stored one.
    """

    state: CallState
    revision: int
    room_sid: str = ""
    start_time_us: int | None = None
    end_time_us: int | None = None
    duration_us: int | None = None
    participants: tuple[CallParticipant, ...] = ()
    agent_join_time_us: int | None = None
    end_reason: CallEndReason | None = None
    agent_redispatches: int = 0
    update_time_us: int | None = None
