"""A headless caller: a person in a LiveKit call without a browser, for tests and benchmarks.

Built on LiveKit's `rtc` SDK (installed with livekit-agents). Like a person with a microphone, the
caller sends audio all the time: silence, and speech when it says something, paced in real time in
10 ms frames, so the agent's voice activity detection sees speech end the way it would in a call.
Everything the agent says is received, resampled to 16 kHz mono, and kept with the time each frame
arrived, so a test can ask "when did the agent start speaking after I stopped?" and can feed what
it heard to speech recognition.

Times are `time.monotonic()` seconds in this process. The end of an utterance is the moment its
last frame was handed to the audio source. While the caller is silent the source's queue fills up
to `SOURCE_QUEUE_MS` (its pacing and the source's drift apart); a microphone has no such backlog, so
each utterance starts by dropping the queued silence and then keeps `LEAD_MS` queued ahead of the
network, as a browser's capture buffer does (more while this process is too busy to keep to it).
That lead is inside every latency measured from the end of an utterance.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from devrun.sample_audio import resample

SEND_RATE = 48_000
HEAR_RATE = 16_000
FRAME_MS = 10
SOURCE_QUEUE_MS = 50
# Audio queued ahead of the network while speaking, about what a browser's capture path holds. A
# browser captures on a real-time thread; this caller shares an event loop with other callers and
# their decoding, and a frame handed over later than the lead starves the track mid-word (garbled
# speech). So when a frame went out later than the lead allows in the last `LATENESS_WINDOW`
# frames, an utterance keeps the whole queue (`SOURCE_QUEUE_MS`) ahead instead. Either lead is inside
# every latency measured from the end of an utterance, so a busy caller only ever measures slower.
LEAD_MS = 20
LATENESS_WINDOW = 200
# An agent frame at or above this level counts as sound (espeak-ng speech sits around -20 dBFS;
# Opus comfort noise and silence sit far below -60).
AUDIBLE_DBFS = -45.0


class CallerError(RuntimeError):
    """The call did not do what the caller waited for, in time (the message says what)."""


@dataclass
class HeardAudio:
    """What the caller received from the agent: 16 kHz mono frames with their arrival times."""

    arrivals: list[float] = field(default_factory=list)
    levels: list[float] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)

    def add(self, at: float, samples: np.ndarray) -> None:
        self.arrivals.append(at)
        self.levels.append(dbfs(samples))
        self.chunks.append(samples)

    def first_audible_after(self, moment: float) -> float | None:
        """Arrival time of the first audible frame after `moment`, or None."""
        for at, level in zip(self.arrivals, self.levels, strict=True):
            if at > moment and level >= AUDIBLE_DBFS:
                return at
        return None

    def last_audible(self) -> float | None:
        for at, level in zip(reversed(self.arrivals), reversed(self.levels), strict=True):
            if level >= AUDIBLE_DBFS:
                return at
        return None

    def audible_seconds(self, start: float = 0.0, end: float = float("inf")) -> float:
        """How much audible audio arrived between `start` and `end` (seconds of audio)."""
        seconds = 0.0
        for at, level, chunk in zip(self.arrivals, self.levels, self.chunks, strict=True):
            if start <= at <= end and level >= AUDIBLE_DBFS:
                seconds += len(chunk) / HEAR_RATE
        return seconds

    def pcm(self, start: float = 0.0, end: float = float("inf")) -> np.ndarray:
        """The int16 samples that arrived between `start` and `end`."""
        parts = [c for at, c in zip(self.arrivals, self.chunks, strict=True) if start <= at <= end]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dB below full scale (-120 for digital silence)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return -120.0 if rms < 1e-6 else 20.0 * float(np.log10(rms / 32768.0))


class Caller:
    """One person in one call. Use as `async with Caller() as caller: await caller.join(url, token)`."""

    def __init__(self, *, buffer_ms: int | None = None) -> None:
        """
        Args:
            buffer_ms: Keep this much audio queued ahead of the network while speaking, always,
                instead of the adaptive lead. For callers whose latency is not measured but whose
                words must arrive whole when several share this process's event loop with a busy
                machine: a stall shorter than the buffer does not cut their speech.
        """
        self.room = rtc.Room()
        self.heard = HeardAudio()
        self._buffer_ms = buffer_ms
        self._source = rtc.AudioSource(SEND_RATE, 1, queue_size_ms=buffer_ms or SOURCE_QUEUE_MS)
        self._pending = np.zeros(0, dtype=np.int16)
        self._utterance_end: asyncio.Future[float] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._agent_joined = asyncio.Event()
        self._agent_left = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._reconnecting = asyncio.Event()
        self._reconnected = asyncio.Event()
        self._muted = False
        self.agent_identity: str | None = None
        self.disconnect_reason: str | None = None
        # The capture lead each utterance was sent with (ms): LEAD_MS, or SOURCE_QUEUE_MS when busy
        # (or `buffer_ms`).
        self.leads_ms: list[int] = []

    async def __aenter__(self) -> Caller:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.leave()

    async def join(self, url: str, token: str, *, within: float = 10.0) -> None:
        """Connects, publishes the microphone and starts sending silence."""
        await self._connect(url, token, within)
        self._tasks.append(asyncio.create_task(self._send_loop(), name="caller-microphone"))

    async def rejoin(self, url: str, token: str, *, within: float = 10.0) -> None:
        """Joins again after the server ended the connection, as a page does; the microphone goes on."""
        self._disconnected.clear()
        self._agent_joined.clear()
        self._agent_left.clear()
        self.room = rtc.Room()
        await self._connect(url, token, within)

    async def _connect(self, url: str, token: str, within: float) -> None:
        self.room.on("participant_connected", self._on_participant)
        self.room.on("participant_disconnected", self._on_participant_left)
        self.room.on("track_subscribed", self._on_track)
        self.room.on("disconnected", self._on_disconnected)
        self.room.on("reconnecting", lambda: self._reconnecting.set())
        self.room.on("reconnected", lambda: self._reconnected.set())
        await asyncio.wait_for(self.room.connect(url, token), within)
        for participant in self.room.remote_participants.values():
            self._on_participant(participant)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        self.microphone = await self.room.local_participant.publish_track(track, options)

    async def say(self, samples: np.ndarray, rate: int) -> float:
        """Speaks `samples` (int16 mono at `rate`) and returns when the last frame was sent."""
        # Off the event loop: other callers in this process may be talking meanwhile.
        voice = samples if rate == SEND_RATE else await asyncio.to_thread(_resample, samples, rate)
        if self._utterance_end is not None and not self._utterance_end.done():
            raise CallerError("the caller is still speaking")
        self._utterance_end = asyncio.get_running_loop().create_future()
        self._pending = np.concatenate([self._pending, voice])
        return await self._utterance_end

    async def set_muted(self, muted: bool) -> None:
        """Mutes the microphone track as a page's mute button does (the server sees it muted)."""
        self._muted = muted
        if muted:
            self.microphone.track.mute()  # type: ignore[union-attr]
        else:
            self.microphone.track.unmute()  # type: ignore[union-attr]

    async def wait_for_agent(self, within: float = 30.0) -> str:
        """Waits until an agent participant is in the room; returns its identity."""
        await _wait(self._agent_joined, within, "no agent joined the room")
        return self.agent_identity or ""

    async def wait_for_agent_speech(self, after: float, within: float = 30.0) -> float:
        """Arrival time of the first audible agent frame after `after`."""
        return await self._poll(
            lambda: self.heard.first_audible_after(after), within, "the agent said nothing"
        )

    async def wait_until_agent_quiet(self, quiet_for: float = 1.0, within: float = 60.0) -> float:
        """Waits until no audible agent frame arrived for `quiet_for` s; returns the last audible one."""

        def quiet_since() -> float | None:
            last = self.heard.last_audible()
            if last is not None and time.monotonic() - last >= quiet_for:
                return last
            return None

        return await self._poll(quiet_since, within, "the agent did not stop speaking")

    async def wait_for_agent_to_leave(self, within: float = 30.0) -> None:
        await _wait(self._agent_left, within, "the agent did not leave")

    async def wait_for_reconnected(self, within: float = 30.0) -> None:
        """Waits until the connection dropped and came back (the SDK reconnects by itself)."""
        await _wait(self._reconnecting, within, "the connection did not drop")
        await _wait(self._reconnected, within, "the caller did not reconnect")

    async def wait_for_drop(self, within: float = 30.0) -> bool:
        """Waits until the connection dropped; True if the SDK is reconnecting, False if it was ended."""
        reconnecting = asyncio.ensure_future(self._reconnecting.wait())
        ended = asyncio.ensure_future(self._disconnected.wait())
        done, pending = await asyncio.wait(
            {reconnecting, ended}, timeout=within, return_when="FIRST_COMPLETED"
        )
        for waiter in pending:
            waiter.cancel()
        if not done:
            raise CallerError(f"the connection did not drop within {within:.0f} s")
        return reconnecting in done

    async def wait_disconnected(self, within: float = 30.0) -> None:
        await _wait(self._disconnected, within, "the caller was not disconnected")

    async def leave(self) -> None:
        """Hangs up (idempotent)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.room.isconnected():
            await self.room.disconnect()

    async def _poll(self, probe: Callable[[], float | None], within: float, failure: str) -> float:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = probe()
            if found is not None:
                return found
            await asyncio.sleep(0.01)
        raise CallerError(f"{failure} within {within:.0f} s")

    async def _send_loop(self) -> None:
        # Paced by the clock, not by the source's queue: frame n goes out at start + n * 10 ms.
        per_frame = SEND_RATE * FRAME_MS // 1000
        silence = np.zeros(per_frame, dtype=np.int16)
        start = time.monotonic()
        sent = 0
        speaking = False
        lateness: deque[float] = deque(maxlen=LATENESS_WINDOW)
        while True:
            if len(self._pending) and not speaking:
                # An utterance starts: what is queued is silence no microphone would hold back.
                self._source.clear_queue()
                speaking = True
                if self._buffer_ms is not None:
                    lead_ms = self._buffer_ms
                else:
                    lead_ms = LEAD_MS if max(lateness, default=0.0) <= LEAD_MS / 1000 else SOURCE_QUEUE_MS
                self.leads_ms.append(lead_ms)
                # Frame n now goes out at start + n * 10 ms with the lead already due.
                start = time.monotonic() - lead_ms / 1000
                sent = 0
            if len(self._pending):
                chunk, self._pending = self._pending[:per_frame], self._pending[per_frame:]
                if len(chunk) < per_frame:
                    chunk = np.concatenate([chunk, silence[: per_frame - len(chunk)]])
            else:
                chunk = silence
            frame = rtc.AudioFrame(chunk.tobytes(), SEND_RATE, 1, per_frame)
            await self._source.capture_frame(frame)
            sent += 1
            if not len(self._pending) and self._utterance_end is not None and not self._utterance_end.done():
                self._utterance_end.set_result(time.monotonic())
                speaking = False
            due = start + sent * FRAME_MS / 1000
            slept = due > time.monotonic()
            if slept:
                await asyncio.sleep(due - time.monotonic())
            if slept or speaking:
                # How late the next frame goes: asyncio's timers and other callers' work. (Behind
                # the clock while silent means the source's queue is full, which is not lateness.)
                lateness.append(max(0.0, time.monotonic() - due))

    async def _receive_loop(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=HEAR_RATE, num_channels=1)
        try:
            async for event in stream:
                samples = np.frombuffer(event.frame.data, dtype=np.int16).copy()
                self.heard.add(time.monotonic(), samples)
        finally:
            await stream.aclose()

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self.agent_identity = participant.identity
            self._agent_joined.set()

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self.agent_identity:
            self._agent_left.set()

    def _on_track(
        self, track: rtc.Track, _publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if (
            track.kind == rtc.TrackKind.KIND_AUDIO
            and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        ):
            self._tasks.append(asyncio.create_task(self._receive_loop(track), name="caller-speaker"))

    def _on_disconnected(self, reason: object) -> None:
        self.disconnect_reason = str(reason)
        self._disconnected.set()


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    converted = resample(array.array("h", samples.astype(np.int16).tobytes()), rate, SEND_RATE)
    return np.frombuffer(converted.tobytes(), dtype=np.int16).copy()


async def _wait(event: asyncio.Event, within: float, failure: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), within)
    except TimeoutError:
        raise CallerError(f"{failure} within {within:.0f} s") from None
