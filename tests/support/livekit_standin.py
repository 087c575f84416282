"""A LiveKit server stand-in speaking the Twirp server API as livekit-api 1.2.2 calls it.

There is no LiveKit server on this machine, so room tests talk to this instead. It is faithful
where our code depends on LiveKit's behaviour:

- `POST /twirp/livekit.RoomService/{CreateRoom,ListRooms,DeleteRoom,ListParticipants}` and
  `POST /twirp/livekit.AgentDispatchService/{CreateDispatch,ListDispatch,DeleteDispatch}` with
  protobuf bodies (`application/protobuf`; JSON bodies are accepted too, as Twirp allows).
- Every call needs `Authorization: Bearer <JWT>` signed (HS256) with the secret of the API key in
  `iss`, not expired, carrying the `video` grant LiveKit requires for that call: `roomCreate` for
  CreateRoom/DeleteRoom, `roomList` for ListRooms, `roomAdmin` for the named `room` for
  ListParticipants and the dispatch calls. Failures are Twirp JSON errors
  (`{"code": "unauthenticated", "msg": ...}`, HTTP 401), as LiveKit returns them.
- CreateRoom returns the existing room when it is already there; DeleteRoom and ListParticipants of
  an unknown room answer `not_found` (404).

State (rooms, participants, dispatches) lives in memory. Tests add participants either in process
(`LiveKitStandIn.add_participant`) or, when it runs as a process, through the test-only endpoint
`POST /_standin/participants` (JSON: room, identity, name, kind, state, sources), and read what
happened from `GET /_standin/state`.

Run as a process: `python -m tests.support.livekit_standin --port N --api-key K --api-secret S`.
Never used by `make run`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import agent_dispatch as lk_dispatch
from livekit.protocol import models as lk_models
from livekit.protocol import room as lk_room

# Twirp error code → HTTP status (https://twitchtv.github.io/twirp/docs/spec_v7.html#error-codes).
_HTTP_STATUS = {
    "invalid_argument": 400,
    "malformed": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "internal": 500,
}

_SOURCES = {
    "camera": lk_models.TrackSource.CAMERA,
    "microphone": lk_models.TrackSource.MICROPHONE,
    "screen_share": lk_models.TrackSource.SCREEN_SHARE,
    "screen_share_audio": lk_models.TrackSource.SCREEN_SHARE_AUDIO,
}
_KINDS = {"standard": lk_models.ParticipantInfo.STANDARD, "agent": lk_models.ParticipantInfo.AGENT}
_STATES = {
    "joining": lk_models.ParticipantInfo.JOINING,
    "joined": lk_models.ParticipantInfo.JOINED,
    "active": lk_models.ParticipantInfo.ACTIVE,
    "disconnected": lk_models.ParticipantInfo.DISCONNECTED,
}


class TwirpError(Exception):
    """A Twirp error response."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg

    def response(self) -> web.Response:
        return web.json_response(
            {"code": self.code, "msg": self.msg}, status=_HTTP_STATUS.get(self.code, 500)
        )


@dataclass
class _Room:
    info: lk_models.Room
    participants: dict[str, lk_models.ParticipantInfo] = field(default_factory=dict)
    dispatches: dict[str, lk_dispatch.AgentDispatch] = field(default_factory=dict)


@dataclass
class _Grants:
    room_create: bool
    room_list: bool
    room_admin: bool
    room: str


Handler = Callable[[Message, _Grants], Awaitable[Message]]


class LiveKitStandIn:
    """The stand-in server. Use `async with LiveKitStandIn(key, secret) as lk:` then `lk.url`."""

    def __init__(self, api_key: str, api_secret: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._keys = {api_key: api_secret}
        self._rooms: dict[str, _Room] = {}
        self._runner: web.AppRunner | None = None
        # Every Twirp call received, as "Service/Method" (including rejected ones), for assertions.
        self.calls: list[str] = []
        self._routes: dict[str, tuple[type[Message], Handler]] = {
            "RoomService/CreateRoom": (lk_room.CreateRoomRequest, self._create_room),
            "RoomService/ListRooms": (lk_room.ListRoomsRequest, self._list_rooms),
            "RoomService/DeleteRoom": (lk_room.DeleteRoomRequest, self._delete_room),
            "RoomService/ListParticipants": (lk_room.ListParticipantsRequest, self._list_participants),
            "AgentDispatchService/CreateDispatch": (
                lk_dispatch.CreateAgentDispatchRequest,
                self._create_dispatch,
            ),
            "AgentDispatchService/ListDispatch": (lk_dispatch.ListAgentDispatchRequest, self._list_dispatch),
            "AgentDispatchService/DeleteDispatch": (
                lk_dispatch.DeleteAgentDispatchRequest,
                self._delete_dispatch,
            ),
        }

    @property
    def url(self) -> str:
        """The `ws://` URL to configure as LIVEKIT_URL (livekit-api maps it to http)."""
        return f"ws://{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twirp/livekit.{service}/{method}", self._twirp)
        app.router.add_post("/_standin/participants", self._http_add_participant)
        app.router.add_get("/_standin/state", self._http_state)
        return app

    async def start(self) -> int:
        """Starts listening; returns the bound port (port 0 picks a free one)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound sockets only here
        if server is not None and getattr(server, "sockets", None):
            self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LiveKitStandIn:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- test hooks --------------------------------------------------------------------------------

    def add_participant(
        self,
        room: str,
        identity: str,
        *,
        name: str = "",
        kind: str = "standard",
        state: str = "active",
        sources: tuple[str, ...] = ("microphone",),
        joined_at: int | None = None,
    ) -> None:
        """Puts a participant into `room` (creating the room, as a join does)."""
        target = self._ensure_room(room)
        info = lk_models.ParticipantInfo(
            sid=f"PA_{uuid.uuid4().hex[:12]}",
            identity=identity,
            name=name,
            state=_STATES[state],
            kind=_KINDS[kind],
            joined_at=joined_at if joined_at is not None else int(time.time()),
        )
        for source in sources:
            audio = source in ("microphone", "screen_share_audio")
            track_type = lk_models.TrackType.AUDIO if audio else lk_models.TrackType.VIDEO
            info.tracks.append(
                lk_models.TrackInfo(
                    sid=f"TR_{uuid.uuid4().hex[:12]}", type=track_type, source=_SOURCES[source]
                )
            )
        target.participants[identity] = info
        target.info.num_participants = len(target.participants)

    def room_names(self) -> list[str]:
        return sorted(self._rooms)

    def dispatches(self, room: str) -> list[lk_dispatch.AgentDispatch]:
        found = self._rooms.get(room)
        return list(found.dispatches.values()) if found else []

    # -- HTTP ----------------------------------------------------------------------------------

    async def _twirp(self, request: web.Request) -> web.Response:
        route = f"{request.match_info['service']}/{request.match_info['method']}"
        self.calls.append(route)
        try:
            if route not in self._routes:
                raise TwirpError("bad_route", f"no handler for path {request.path}")
            request_type, handler = self._routes[route]
            grants = self._authenticate(request.headers.get("Authorization", ""))
            message = await self._parse(request, request_type)
            reply = await handler(message, grants)
        except TwirpError as err:
            return err.response()
        if request.content_type == "application/json":
            return web.Response(body=json_format.MessageToJson(reply), content_type="application/json")
        return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")

    async def _parse(self, request: web.Request, request_type: type[Message]) -> Message:
        body = await request.read()
        message = request_type()
        try:
            if request.content_type == "application/protobuf":
                message.ParseFromString(body)
            elif request.content_type == "application/json":
                json_format.Parse(body or b"{}", message, ignore_unknown_fields=True)
            else:
                raise TwirpError("bad_route", f"unexpected Content-Type: {request.content_type!r}")
        except (DecodeError, json_format.ParseError) as exc:
            raise TwirpError("malformed", f"the request could not be decoded: {exc}") from None
        return message

    def _authenticate(self, header: str) -> _Grants:
        """Checks the bearer JWT the way LiveKit's auth middleware does."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise TwirpError("unauthenticated", "permissions denied")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise TwirpError("unauthenticated", "invalid token: malformed") from None
        key = unverified.get("iss")
        secret = self._keys.get(key) if isinstance(key, str) else None
        if secret is None:
            raise TwirpError("unauthenticated", "invalid API key")
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]}, leeway=0)
        except jwt.ExpiredSignatureError:
            raise TwirpError("unauthenticated", "invalid token: token is expired") from None
        except jwt.InvalidTokenError:
            raise TwirpError("unauthenticated", "invalid token: signature is invalid") from None
        video = claims.get("video") or {}
        return _Grants(
            room_create=bool(video.get("roomCreate")),
            room_list=bool(video.get("roomList")),
            room_admin=bool(video.get("roomAdmin")),
            room=str(video.get("room", "")),
        )

    async def _http_add_participant(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        self.add_participant(
            body["room"],
            body["identity"],
            name=body.get("name", ""),
            kind=body.get("kind", "standard"),
            state=body.get("state", "active"),
            sources=tuple(body.get("sources", ["microphone"])),
        )
        return web.json_response({"ok": True})

    async def _http_state(self, _: web.Request) -> web.Response:
        state = {
            name: {
                "participants": sorted(room.participants),
                "dispatches": [
                    {"id": d.id, "agentName": d.agent_name, "metadata": d.metadata}
                    for d in room.dispatches.values()
                ],
            }
            for name, room in self._rooms.items()
        }
        return web.json_response({"rooms": state, "calls": self.calls})

    # -- permission checks ----------------------------------------------------------------------

    @staticmethod
    def _require(allowed: bool) -> None:
        if not allowed:
            raise TwirpError("unauthenticated", "permissions denied")

    @classmethod
    def _require_admin(cls, grants: _Grants, room: str) -> None:
        cls._require(grants.room_admin and (grants.room == "" or grants.room == room))

    # -- RoomService -------------------------------------------------------------------------------

    def _ensure_room(self, name: str, empty_timeout: int = 0, max_participants: int = 0) -> _Room:
        room = self._rooms.get(name)
        if room is None:
            now = time.time()
            room = _Room(
                lk_models.Room(
                    sid=f"RM_{uuid.uuid4().hex[:12]}",
                    name=name,
                    empty_timeout=empty_timeout or 300,
                    max_participants=max_participants,
                    creation_time=int(now),
                    creation_time_ms=int(now * 1000),
                )
            )
            self._rooms[name] = room
        return room

    async def _create_room(self, message: Message, grants: _Grants) -> Message:
        assert isinstance(message, lk_room.CreateRoomRequest)
        self._require(grants.room_create)
        if not message.name:
            raise TwirpError("invalid_argument", "room name is required")
        existed = message.name in self._rooms
        room = self._ensure_room(message.name, message.empty_timeout, message.max_participants)
        if not existed:
            # LiveKit dispatches the agents named in a CreateRoom request when it creates the room.
            for agent in message.agents:
                self._add_dispatch(room, agent.agent_name, agent.metadata)
        return room.info

    async def _list_rooms(self, message: Message, grants: _Grants) -> Message:
        assert isinstance(message, lk_room.ListRoomsRequest)
        self._require(grants.room_list)
        names = set(message.names)
        rooms = [room.info for name, room in sorted(self._rooms.items()) if not names or name in names]
        return lk_room.ListRoomsResponse(rooms=rooms)

    async def _delete_room(self, message: Message, grants: _Grants) -> Message:
        assert isinstance(message, lk_room.DeleteRoomRequest)
        self._require(grants.room_create)
        if self._rooms.pop(message.room, None) is None:
            raise TwirpError("not_found", "requested room does not exist")
        return lk_room.DeleteRoomResponse()

    async def _list_participants(self, message: Message, grants: _Grants) -> Message:
        assert isinstance(message, lk_room.ListParticipantsRequest)
        self._require_admin(grants, message.room)
        room = self._rooms.get(message.room)
        if room is None:
            raise TwirpError("not_found", "requested room does not exist")
        return lk_room.ListParticipantsResponse(participants=list(room.participants.values()))

    # -- AgentDispatchService ------------------------------------------------------------------------

    def _add_dispatch(self, room: _Room, agent_name: str, metadata: str) -> lk_dispatch.AgentDispatch:
        dispatch = lk_dispatch.AgentDispatch(
            id=f"AD_{uuid.uuid4().hex[:12]}",
            agent_name=agent_name,
            room=room.info.name,
            metadata=metadata,
            state=lk_dispatch.AgentDispatchState(created_at=time.time_ns()),
        )
        room.dispatches[dispatch.id] = dispatch
        return dispatch

    async def _create_dispatch(self, message: Message, grants: _Grants) -> Message:
        assert isinstance(message, lk_dispatch.CreateAgentDispatchRequest)
        self._require_admin(grants, message.room)
        if not message.room:
            raise TwirpError("invalid_argument", "room is required")
        # LiveKit creates the room for an explicit dispatch if it is not there yet.
        return self._add_dispatch(self._ensure_room(message.room), message.agent_name, message.metadata)

    async def _list_dispatch(self, message: Message, grants: _Grants) -> Message:
        assert isinstance(message, lk_dispatch.ListAgentDispatchRequest)
        self._require_admin(grants, message.room)
        room = self._rooms.get(message.room)
        found = list(room.dispatches.values()) if room else []
        if message.dispatch_id:
            found = [d for d in found if d.id == message.dispatch_id]
        return lk_dispatch.ListAgentDispatchResponse(agent_dispatches=found)

    async def _delete_dispatch(self, message: Message, grants: _Grants) -> Message:
        assert isinstance(message, lk_dispatch.DeleteAgentDispatchRequest)
        self._require_admin(grants, message.room)
        room = self._rooms.get(message.room)
        dispatch = room.dispatches.pop(message.dispatch_id, None) if room else None
        if dispatch is None:
            raise TwirpError("not_found", "dispatch not found")
        return dispatch


async def _serve(args: argparse.Namespace) -> None:
    standin = LiveKitStandIn(args.api_key, args.api_secret, host=args.host, port=args.port)
    port = await standin.start()
    print(json.dumps({"event": "livekit stand-in listening", "port": port}), flush=True)  # noqa: T201
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await standin.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
