"""The real LiveKit server for tests, and participants that really join its rooms.

`start_livekit` runs the server built by bootstrap (`.tools/bin/livekit-server`, see
devrun/livekit_server.py) on free loopback ports with the given keys. `Participant` joins a room
with the `livekit` rtc package (a WebRTC client like the page's and the voice worker's), publishes
tracks and records how it was disconnected, so tests see what the server lets a token do.

Every participant must be disconnected before the test's event loop closes (the rtc package's
native side aborts the interpreter at exit if a room is still connected): use `joined(...)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from livekit import api, rtc
from livekit.protocol import models as lk_models
from livekit.protocol import room as lk_room
from livekit.rtc.participant import PublishTrackError

from devrun.livekit_server import LiveKitKeys, LiveKitServerConfig, start_server
from devrun.mesh import free_udp_port
from devrun.ports import free_port
from devrun.processes import ManagedProcess

# Joining on loopback takes ~0.1 s; this only bounds a broken server or client.
JOIN_TIMEOUT_SECONDS = 15.0
# How long a test waits for the server to tell a participant something (a disconnect, say).
EVENT_TIMEOUT_SECONDS = 10.0
# A camera track reaches the server's participant list only once media flows: frames this often.
CAMERA_FRAME_INTERVAL_SECONDS = 0.05

__all__ = ["LiveKitServer", "Participant", "PublishTrackError", "joined", "start_livekit"]


@dataclass
class LiveKitServer:
    """A running LiveKit server on 127.0.0.1.

    Attributes:
        config: What it was started with (keys, ports).
        process: The server process (`stop()` closes its port: "server down").
        log_path: Its log file, for failure messages.
    """

    config: LiveKitServerConfig
    process: ManagedProcess
    log_path: Path

    @property
    def url(self) -> str:
        """`ws://127.0.0.1:PORT`: what agent_svc is configured with and clients join."""
        return self.config.ws_url

    @property
    def http_url(self) -> str:
        return self.config.http_url

    @property
    def keys(self) -> LiveKitKeys:
        return self.config.keys

    def api(self) -> api.LiveKitAPI:
        """The server API with the server's own keys, to observe it (close it with `aclose()`)."""
        return api.LiveKitAPI(self.http_url, self.keys.api_key, self.keys.api_secret)

    def stop(self) -> None:
        """Stops the server (devrun sends the second SIGTERM it needs); returns once it exited."""
        self.process.stop()


def start_livekit(workdir: Path, keys: LiveKitKeys) -> LiveKitServer:
    """Starts the real server with `keys` on free ports and waits until it answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = LiveKitServerConfig(
        keys=keys, port=free_port(), udp_port_start=free_udp_port(), udp_ports=1, log_level="info"
    )
    log_path = workdir / "livekit.log"
    process = start_server(config, workdir / "livekit.json", log_path)
    return LiveKitServer(config, process, log_path)


@dataclass
class Participant:
    """A participant connected with the rtc package.

    Attributes:
        room: The connected `rtc.Room`.
        disconnected: Set when the server disconnects it; `reason` says why.
    """

    room: rtc.Room
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    reason: int | None = None
    _feeders: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def identity(self) -> str:
        return self.room.local_participant.identity

    def _on_disconnected(self, reason: int) -> None:
        self.reason = reason
        self.disconnected.set()

    async def publish_microphone(self) -> rtc.LocalTrackPublication:
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        return await self.room.local_participant.publish_track(track, options)

    async def publish_camera(self) -> rtc.LocalTrackPublication:
        """Publishes a camera track fed with grey frames; raises `PublishTrackError` when refused.

        The server answers a publication the token does not allow with silence ("no permission to
        publish track" in its log): the rtc package gives up after its own 10 s timeout.
        """
        width, height = 64, 64
        source = rtc.VideoSource(width, height)
        track = rtc.LocalVideoTrack.create_video_track("camera", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
        publication = await self.room.local_participant.publish_track(track, options)
        frame = rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, bytes([128]) * (width * height * 4))

        async def feed() -> None:
            while True:
                source.capture_frame(frame)
                await asyncio.sleep(CAMERA_FRAME_INTERVAL_SECONDS)

        self._feeders.append(asyncio.create_task(feed()))
        return publication

    async def _stop_feeding(self) -> None:
        for task in self._feeders:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def wait_disconnected(self, within_seconds: float = EVENT_TIMEOUT_SECONDS) -> int:
        """The server's disconnect reason (`rtc.DisconnectReason`), once it disconnected us."""
        try:
            await asyncio.wait_for(self.disconnected.wait(), within_seconds)
        except TimeoutError:
            raise AssertionError(f"{self.identity} was still connected after {within_seconds}s") from None
        assert self.reason is not None
        return self.reason


@asynccontextmanager
async def joined(url: str, token: str, *, auto_subscribe: bool = False) -> AsyncIterator[Participant]:
    """Joins the room `token` names at `url`; always disconnects on the way out.

    Raises:
        rtc.ConnectError: The server refused the join (a full room, a bad token, ...).
    """
    room = rtc.Room()
    participant = Participant(room)
    room.on("disconnected", participant._on_disconnected)
    options = rtc.RoomOptions(auto_subscribe=auto_subscribe, connect_timeout=JOIN_TIMEOUT_SECONDS)
    try:
        await asyncio.wait_for(room.connect(url, token, options), JOIN_TIMEOUT_SECONDS + 5)
        yield participant
    finally:
        await participant._stop_feeding()
        await room.disconnect()


async def room_info(server: api.LiveKitAPI, name: str) -> lk_models.Room | None:
    """What the server says about room `name` (ListRooms), or None when it has no such room."""
    reply = await server.room.list_rooms(lk_room.ListRoomsRequest(names=[name]))
    return next((room for room in reply.rooms if room.name == name), None)


async def participants_by_identity(server: api.LiveKitAPI, name: str) -> dict[str, lk_models.ParticipantInfo]:
    """The server's own participant list of room `name` (ListParticipants)."""
    reply = await server.room.list_participants(lk_room.ListParticipantsRequest(room=name))
    return {p.identity: p for p in reply.participants}


async def wait_for_tracks(
    server: api.LiveKitAPI,
    name: str,
    expected: dict[str, set[int]],
    within_seconds: float = EVENT_TIMEOUT_SECONDS,
) -> dict[str, lk_models.ParticipantInfo]:
    """Waits until the server lists, for each identity, exactly the track sources in `expected`.

    A track is listed once its media reaches the server, a moment after the publication is confirmed.
    """
    deadline = asyncio.get_running_loop().time() + within_seconds
    while True:
        listed = await participants_by_identity(server, name)
        seen = {
            identity: {t.source for t in listed[identity].tracks}
            for identity in expected
            if identity in listed
        }
        if seen == expected:
            return listed
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(
                f"after {within_seconds}s the server lists sources {seen} in {name}, not {expected}"
            )
        await asyncio.sleep(0.05)
