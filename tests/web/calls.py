"""Helpers for the browser call tests: what the page showed over time, and what the servers say.

The page is watched from inside by `PROBE` (an init script, so it sees the page from its first
moment): when it opened the microphone, every state of the connection badge, every change of a
transcript line, and the participant list's level meters and quality several times a second. The
servers are asked directly: the LiveKit server's own API for rooms and tracks, chat_svc for the
stored transcript.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from livekit import api as lk_api
from livekit import rtc
from livekit.agents.utils.codecs import AudioStreamDecoder
from livekit.protocol import models as lk_models

from servicekit.ids import room_name
from syntera.conversation.v1 import conversation_service_pb2 as cs
from syntera.conversation.v1 import conversation_service_pb2_grpc as cs_grpc
from syntera.conversation.v1 import resources_pb2 as res
from syntera.livekit.v1 import livekit_service_pb2 as lk_pb
from syntera.livekit.v1 import livekit_service_pb2_grpc as lk_grpc
from syntera.livekit.v1 import resources_pb2 as lk_res
from tests.support.identity import bearer, service_token
from tests.support.mesh import Mesh
from tests.voice.real_call import participants
from tests.web.browser import Browser
from voice_worker.providers.whisper_stt import to_whisper_input

# Installed with Browser.init_script before the page loads. Times are the page's Date.now() (ms).
PROBE = """
(() => {
  const probe = { micOpens: [], states: [], turns: [], levels: [] };
  window.__probe = probe;
  // Chromium's fake microphone starts its recording when a page opens it: note when.
  const devices = navigator.mediaDevices;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    if (stream.getAudioTracks().length) probe.micOpens.push(Date.now());
    return stream;
  };
  // Said on the console too: the driver reads it without touching the page, which matters where
  // the test must not give the page a user gesture (every evaluate does).
  const playing = (event) => console.log(`probe: playing ${event.target.tagName}`);
  document.addEventListener("playing", playing, true);
  document.addEventListener("DOMContentLoaded", () => {
    const startAudio = document.getElementById("start-audio");
    new MutationObserver(() => console.log(`probe: start-audio ${startAudio.hidden ? "hidden" : "shown"}`))
      .observe(startAudio, { attributes: true, attributeFilter: ["hidden"] });
    const badge = document.getElementById("livekit-status");
    new MutationObserver(() => {
      probe.states.push([Date.now(), badge.dataset.state]);
      console.log(`probe: state ${badge.dataset.state}`);
    }).observe(badge, {
      attributes: true,
      attributeFilter: ["data-state"],
    });
    // Every value a transcript line's data-final had, in order: "false" then "true" is interim then final.
    new MutationObserver((records) => {
      for (const record of records) {
        const item = record.target;
        const { seq, role, final } = item.dataset;
        probe.turns.push([Date.now(), seq, role, record.oldValue, final]);
      }
    }).observe(document.getElementById("transcript"), {
      attributes: true,
      subtree: true,
      attributeFilter: ["data-final"],
      attributeOldValue: true,
    });
    window.setInterval(() => {
      for (const item of document.querySelectorAll("#participants li[data-identity]")) {
        const meter = item.querySelector("meter");
        probe.levels.push([Date.now(), item.dataset.identity, item.dataset.kind, meter ? meter.value : -1,
          item.dataset.quality, item.dataset.speaking === "true"]);
      }
    }, 100);
  });
})();
"""


@dataclass(frozen=True)
class Level:
    at_ms: int
    identity: str
    kind: str
    value: float
    quality: str
    speaking: bool


async def mic_opened_ms(browser: Browser, *, within_ms: int = 10_000) -> list[int]:
    """When the page opened the microphone (page clock, ms), waiting for the first time."""
    await browser.wait_for("() => window.__probe.micOpens.length > 0", timeout_ms=within_ms)
    opens: list[int] = await browser.evaluate("() => window.__probe.micOpens")
    return opens


async def badge_states(browser: Browser) -> list[tuple[int, str]]:
    """Each state the connection badge took, with when it took it (repeats of a state dropped)."""
    rows: list[list[Any]] = await browser.evaluate("() => window.__probe.states")
    states: list[tuple[int, str]] = []
    for at, state in rows:
        if not states or states[-1][1] != state:
            states.append((int(at), str(state)))
    return states


async def levels(browser: Browser) -> list[Level]:
    rows: list[list[Any]] = await browser.evaluate("() => window.__probe.levels")
    return [Level(int(r[0]), str(r[1]), str(r[2]), float(r[3]), str(r[4]), bool(r[5])) for r in rows]


async def final_values(browser: Browser, seq: int) -> list[str]:
    """The values transcript line `seq` had for data-final, oldest first (as the probe saw them change)."""
    rows: list[list[Any]] = await browser.evaluate("() => window.__probe.turns")
    mine = [r for r in rows if r[1] == str(seq)]
    values = [str(r[3]) for r in mine if r[3] is not None]
    if mine:
        values.append(str(mine[-1][4]))
    return values


async def page_now_ms(browser: Browser) -> int:
    now: int = await browser.evaluate("() => Date.now()")
    return now


async def wait_page_time(browser: Browser, at_ms: int) -> None:
    """Sleeps until the page's clock reaches `at_ms` (the page and the test share the machine's clock)."""
    delay = (at_ms - await page_now_ms(browser)) / 1000
    if delay > 0:
        await asyncio.sleep(delay)


async def transcript_lines(browser: Browser) -> list[dict[str, str]]:
    """The transcript as shown: seq, role, final and text of each line, top to bottom."""
    lines: list[dict[str, str]] = await browser.evaluate(
        """() => [...document.querySelectorAll('#transcript li')].map(li => ({
            seq: li.dataset.seq, role: li.dataset.role, final: li.dataset.final,
            text: li.querySelector('.text')?.textContent ?? ''}))"""
    )
    return lines


async def stored_messages(channel: grpc.aio.Channel, conversation_id: str, token: str) -> list[res.Message]:
    stub = cs_grpc.ConversationServiceStub(channel)
    reply = await stub.ListMessages(
        cs.ListMessagesRequest(conversation_id=conversation_id, page_size=500),
        metadata=bearer(token),
        timeout=10,
    )
    return list(reply.messages)


def final_turns(messages: list[res.Message], role: res.Role.ValueType) -> list[res.Message]:
    return [m for m in messages if m.role == role and m.final and m.source == res.MESSAGE_SOURCE_TRANSCRIPT]


async def wait_stored(
    channel: grpc.aio.Channel,
    conversation_id: str,
    token: str,
    done: Callable[[list[res.Message]], bool],
    *,
    within: float = 30.0,
) -> list[res.Message]:
    """Polls ListMessages until `done(messages)`; fails with what was stored."""
    deadline = time.monotonic() + within
    messages: list[res.Message] = []
    while time.monotonic() < deadline:
        messages = await stored_messages(channel, conversation_id, token)
        if done(messages):
            return messages
        await asyncio.sleep(0.25)
    stored = [(m.seq, res.Role.Name(m.role), m.final, m.text) for m in messages]
    raise AssertionError(f"the transcript was not complete within {within:.0f} s; stored: {stored}")


async def in_room(mesh: Mesh, conversation_id: str) -> list[lk_models.ParticipantInfo]:
    """Who the LiveKit server has in the conversation's room, as its own API says."""
    return await participants(mesh, room_name(conversation_id))


async def participant(mesh: Mesh, conversation_id: str, identity: str) -> lk_models.ParticipantInfo | None:
    for info in await in_room(mesh, conversation_id):
        if info.identity == identity:
            return info
    return None


def track(
    info: lk_models.ParticipantInfo | None, source: lk_models.TrackSource
) -> lk_models.TrackInfo | None:
    if info is None:
        return None
    for published in info.tracks:
        if published.source == source:
            return published
    return None


async def until(probe: Callable[[], Awaitable[bool]], what: str, *, within: float = 15.0) -> None:
    """Polls `probe` until it holds; fails naming `what`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {within:.0f} s")


async def delete_room(mesh: Mesh, conversation_id: str) -> None:
    """Deletes the room on the LiveKit server, as an operator (or a bug) would, mid-call."""
    client = lk_api.LiveKitAPI(mesh.livekit.http_url, mesh.livekit.api_key, mesh.livekit.api_secret)
    try:
        await client.room.delete_room(lk_api.DeleteRoomRequest(room=room_name(conversation_id)))
    finally:
        await client.aclose()


async def wait_console(browser: Browser, text: str, *, within: float = 15.0) -> list[str]:
    """Waits for a console line containing `text`; returns the lines so far.

    Reads the driver's copy of the console, so the page gets no user gesture from it (unlike
    evaluate and the waits, which Playwright runs as if the user had acted).
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        lines = await browser.console()
        if any(text in line for line in lines):
            return lines
        await asyncio.sleep(0.2)
    raise AssertionError(f"no console line with {text!r} within {within:.0f} s: {await browser.console()}")


# The byte-stream topic livekit-client sends its pre-connect recording on (LiveKit Agents reads it).
PRE_CONNECT_TOPIC = "lk.agent.pre-connect-audio-buffer"


class PreConnectListener:
    """A participant the page takes for the agent (its token is an agent token), which keeps the
    pre-connect recording the page sends it, and nothing else: what LiveKit Agents' own handler
    would receive, without a voice pipeline deciding what to do with it."""

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.mime_type = ""
        self.attributes: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._received = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self, url: str, token: str) -> None:
        self.room.register_byte_stream_handler(PRE_CONNECT_TOPIC, self._on_stream)
        await self.room.connect(url, token, rtc.RoomOptions(auto_subscribe=True))

    def _on_stream(self, reader: rtc.ByteStreamReader, _identity: str) -> None:
        task = asyncio.create_task(self._read(reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, reader: rtc.ByteStreamReader) -> None:
        self.mime_type = reader.info.mime_type
        self.attributes = dict(reader.info.attributes or {})
        async for chunk in reader:
            self._chunks.append(chunk)
        self._received.set()

    async def audio(self, *, within: float = 15.0) -> np.ndarray:
        """The recording, decoded: mono float32 samples at 16 kHz."""
        await asyncio.wait_for(self._received.wait(), within)
        decoder = AudioStreamDecoder(
            sample_rate=int(self.attributes.get("sampleRate", "48000")),
            num_channels=int(self.attributes.get("channels", "1")),
            format=self.mime_type,
        )
        for chunk in self._chunks:
            decoder.push(chunk)
        decoder.end_input()
        frames = [frame async for frame in decoder]
        await decoder.aclose()
        return to_whisper_input(frames)

    async def leave(self) -> None:
        await self.room.disconnect()


async def agent_token(mesh: Mesh, conversation_id: str) -> tuple[str, str]:
    """(url, token) for joining the conversation's room as the agent, as the voice worker's jobs do."""
    async with grpc.aio.insecure_channel(mesh.agent_addr) as channel:
        reply = await lk_grpc.LiveKitServiceStub(channel).GenerateToken(
            lk_pb.GenerateTokenRequest(
                conversation_id=conversation_id,
                agent_id="default",
                participant_kind=lk_res.PARTICIPANT_KIND_AGENT,
            ),
            metadata=bearer(service_token("voice-worker")),
            timeout=10,
        )
    return reply.url, reply.token
