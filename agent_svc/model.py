"""Domain types of the LiveKit side of agent_svc (no grpc, no protobuf)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class CallMedia(enum.Enum):
    """What kind of call a room serves; decides what a user may publish."""

    VOICE = "voice"
    VIDEO = "video"


class ParticipantKind(enum.Enum):
    USER = "user"
    AGENT = "agent"


class ParticipantState(enum.Enum):
    JOINING = "joining"
    JOINED = "joined"
    ACTIVE = "active"
    DISCONNECTED = "disconnected"


class TrackSource(enum.Enum):
    """Media sources, named as LiveKit names them in `canPublishSources`."""

    MICROPHONE = "microphone"
    CAMERA = "camera"
    SCREEN_SHARE = "screen_share"
    SCREEN_SHARE_AUDIO = "screen_share_audio"


@dataclass(frozen=True)
class MintedToken:
    """A LiveKit access token and what it grants."""

    token: str
    url: str
    room_name: str
    identity: str
    kind: ParticipantKind
    expire_time: datetime
    agent_name: str


@dataclass(frozen=True)
class RoomCreated:
    room_name: str
    existed: bool
    sid: str
    dispatch_id: str


@dataclass(frozen=True)
class AgentDispatched:
    room_name: str
    dispatch_id: str
    already_dispatched: bool


@dataclass(frozen=True)
class RoomDeleted:
    room_name: str
    deleted: bool


@dataclass(frozen=True)
class ParticipantView:
    identity: str
    name: str
    kind: ParticipantKind
    state: ParticipantState
    join_time: datetime | None
    published_sources: tuple[TrackSource, ...]
    # LiveKit's id of this connection (a rejoin gets a new one).
    sid: str = ""
