"""The LiveKit server API (RoomService, AgentDispatchService) as agent_svc uses it.

Wraps livekit-api's `LiveKitAPI` on one aiohttp session and turns its failures into domain errors:
unreachable or failing server → UNAVAILABLE (`LIVEKIT_UNAVAILABLE`); credentials rejected (HTTP
401/403) → FAILED_PRECONDITION (`LIVEKIT_CREDENTIALS_REJECTED`). FAILED_PRECONDITION rather than
UNAVAILABLE because retrying cannot help until an operator fixes the configuration, and the caller
is not at fault. Messages never contain the key or the secret.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import structlog
from livekit import api as lk_api
from livekit.protocol import agent_dispatch as lk_dispatch
from livekit.protocol import models as lk_models
from livekit.protocol import room as lk_room

from agent_svc.model import ParticipantKind, ParticipantState, ParticipantView, TrackSource
from servicekit.errors import DomainError, ErrorKind, unavailable

log = structlog.get_logger("agent_svc.livekit")

T = TypeVar("T")

_STATES = {
    lk_models.ParticipantInfo.JOINING: ParticipantState.JOINING,
    lk_models.ParticipantInfo.JOINED: ParticipantState.JOINED,
    lk_models.ParticipantInfo.ACTIVE: ParticipantState.ACTIVE,
    lk_models.ParticipantInfo.DISCONNECTED: ParticipantState.DISCONNECTED,
}
_SOURCES = {
    lk_models.TrackSource.MICROPHONE: TrackSource.MICROPHONE,
    lk_models.TrackSource.CAMERA: TrackSource.CAMERA,
    lk_models.TrackSource.SCREEN_SHARE: TrackSource.SCREEN_SHARE,
    lk_models.TrackSource.SCREEN_SHARE_AUDIO: TrackSource.SCREEN_SHARE_AUDIO,
}


class RoomNotFoundError(Exception):
    """LiveKit has no room by that name (callers decide whether that is an error)."""


@dataclass(frozen=True)
class RoomInfo:
    name: str
    sid: str
    # When the server created the room (UTC microseconds); 0 when it did not say.
    created_us: int = 0


@dataclass(frozen=True)
class DispatchInfo:
    dispatch_id: str
    agent_name: str
    metadata: str = ""
    # Jobs the server handed to workers for this dispatch (0: no worker took it).
    jobs: int = 0
    # When the dispatch was made (UTC microseconds).
    created_us: int = 0


class LiveKitGateway:
    """Typed, error-mapped access to the LiveKit server API.

    Args:
        url: The LiveKit URL (`wss://…`; livekit-api derives the HTTP API address from it).
        api_key: The API key.
        api_secret: The API secret; only handed to livekit-api to sign per-call tokens.
        timeout_seconds: Bound on every call, retries included.
    """

    def __init__(self, url: str, api_key: str, api_secret: str, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds))
        self._api = lk_api.LiveKitAPI(url, api_key, api_secret, session=self._session)

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._session.close()

    async def find_room(self, name: str) -> RoomInfo | None:
        """The room named `name`, or None."""
        reply = await self._call(self._api.room.list_rooms(lk_room.ListRoomsRequest(names=[name])))
        for room in reply.rooms:
            if room.name == name:
                return _room(room)
        return None

    async def list_rooms(self) -> list[RoomInfo]:
        """Every room the server has now."""
        reply = await self._call(self._api.room.list_rooms(lk_room.ListRoomsRequest()))
        return [_room(room) for room in reply.rooms]

    async def create_room(self, name: str, empty_timeout: int, max_participants: int) -> RoomInfo:
        """Creates the room (LiveKit returns the existing one if it is already there)."""
        room = await self._call(
            self._api.room.create_room(
                lk_room.CreateRoomRequest(
                    name=name, empty_timeout=empty_timeout, max_participants=max_participants
                )
            )
        )
        return _room(room)

    async def delete_room(self, name: str) -> bool:
        """Deletes the room; False when there was none."""
        try:
            await self._call(self._api.room.delete_room(lk_room.DeleteRoomRequest(room=name)))
        except RoomNotFoundError:
            return False
        return True

    async def list_participants(self, name: str) -> list[ParticipantView]:
        """The room's participants; raises RoomNotFoundError for an unknown room."""
        reply = await self._call(self._api.room.list_participants(lk_room.ListParticipantsRequest(room=name)))
        return [_participant(p) for p in reply.participants]

    async def list_dispatches(self, room: str) -> list[DispatchInfo]:
        dispatches = await self._call(self._api.agent_dispatch.list_dispatch(room))
        return [
            DispatchInfo(d.id, d.agent_name, d.metadata, len(d.state.jobs), d.state.created_at // 1000)
            for d in dispatches
        ]

    async def delete_dispatch(self, room: str, dispatch_id: str) -> None:
        """Deletes a dispatch (stopping any job it still has); gone already is fine."""
        try:
            await self._call(self._api.agent_dispatch.delete_dispatch(dispatch_id, room))
        except RoomNotFoundError:
            return

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> DispatchInfo:
        dispatch = await self._call(
            self._api.agent_dispatch.create_dispatch(
                lk_dispatch.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
            )
        )
        return DispatchInfo(dispatch.id, dispatch.agent_name, dispatch.metadata)

    async def _call(self, call: Awaitable[T]) -> T:
        """Runs one API call under the overall timeout and maps its failures."""
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except lk_api.TwirpError as err:
            raise _map_server_error(err) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            log.warning("livekit unreachable", error_type=type(err).__name__)
            raise unavailable("the LiveKit server is unreachable", "LIVEKIT_UNAVAILABLE") from None


def _map_server_error(err: lk_api.TwirpError) -> Exception:
    if err.code == "not_found":
        return RoomNotFoundError()
    if err.status in (401, 403) or err.code in ("unauthenticated", "permission_denied"):
        # LiveKit's message may describe the token; it never carries the secret, but keep it out anyway.
        log.error("livekit rejected the api credentials", status=err.status, code=err.code)
        return DomainError(
            ErrorKind.FAILED_PRECONDITION,
            "LIVEKIT_CREDENTIALS_REJECTED",
            "the LiveKit server rejected agent_svc's API credentials; "
            "an operator must check LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
        )
    if err.status >= 500 or err.code in ("unavailable", "deadline_exceeded", "resource_exhausted"):
        log.warning("livekit failed", status=err.status, code=err.code)
        return unavailable("the LiveKit server is unavailable", "LIVEKIT_UNAVAILABLE")
    log.error("livekit refused a request", status=err.status, code=err.code, detail=err.message)
    return DomainError(
        ErrorKind.INTERNAL, "LIVEKIT_REQUEST_REJECTED", "the LiveKit server refused the request"
    )


def _room(room: lk_models.Room) -> RoomInfo:
    created_ms = room.creation_time_ms or room.creation_time * 1000
    return RoomInfo(room.name, room.sid, created_ms * 1000)


def _participant(info: lk_models.ParticipantInfo) -> ParticipantView:
    joined_ms = info.joined_at_ms or info.joined_at * 1000
    sources: list[TrackSource] = []
    for track in info.tracks:
        source = _SOURCES.get(track.source)
        if source is not None and source not in sources:
            sources.append(source)
    return ParticipantView(
        identity=info.identity,
        name=info.name,
        kind=ParticipantKind.AGENT if info.kind == lk_models.ParticipantInfo.AGENT else ParticipantKind.USER,
        state=_STATES.get(info.state, ParticipantState.JOINING),
        join_time=dt.datetime.fromtimestamp(joined_ms / 1000, tz=dt.UTC) if joined_ms else None,
        published_sources=tuple(sources),
        sid=info.sid,
    )
