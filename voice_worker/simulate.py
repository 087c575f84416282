"""Runs the agent pipeline on a WAV file instead of a LiveKit room.

The user's audio is played into the session in real time (20 ms frames), and the agent's audio
goes to a virtual loudspeaker that also plays in real time, so turn taking and interruptions
behave as in a call. The loudspeaker records what was actually played, placed on the same time
line as the input, and writes it to a WAV file at the end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog
from livekit import rtc
from livekit.agents.voice import io
from livekit.agents.voice.transcription.synchronizer import TranscriptSynchronizer

from voice_worker.call import Call, DispatchInfo, ProfileSource, open_call
from voice_worker.sender import TranscriptSink, drain_orphans
from voice_worker.settings import VoiceWorkerSettings
from voice_worker.wav import Pcm, read_wav, write_wav

log = structlog.get_logger("voice_worker.simulate")

FRAME_SECONDS = 0.02
SPEAKER_SAMPLE_RATE = 22_050


class WavAudioInput(io.AudioInput):
    """Plays a WAV into the session in real time, then silence until closed."""

    def __init__(self, pcm: Pcm) -> None:
        super().__init__(label="wav-input")
        mono = pcm.mono()
        self._samples = mono.samples
        self._rate = mono.sample_rate
        self._per_frame = int(self._rate * FRAME_SECONDS)
        self._index = 0
        self._started_at: float | None = None
        self._closed = False
        self.ended = asyncio.Event()

    @property
    def started_at(self) -> float | None:
        """Wall-clock time (time.time()) of the first frame."""
        return self._started_at

    def close(self) -> None:
        self._closed = True

    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed:
            raise StopAsyncIteration
        now = time.time()
        if self._started_at is None:
            self._started_at = now
        due = self._started_at + self._index * FRAME_SECONDS
        if due > now:
            await asyncio.sleep(due - now)
        start = self._index * self._per_frame
        chunk = self._samples[start : start + self._per_frame]
        if len(chunk) < self._per_frame:
            self.ended.set()
            chunk = np.concatenate([chunk, np.zeros(self._per_frame - len(chunk), dtype=np.int16)])
        self._index += 1
        return rtc.AudioFrame(chunk.astype(np.int16).tobytes(), self._rate, 1, self._per_frame)


@dataclass
class _Played:
    at: float  # time.time() when playback started
    samples: np.ndarray


class VirtualSpeaker(io.AudioOutput):
    """An audio sink that "plays" in real time and keeps what was played.

    Playback of a segment starts with its first frame and lasts as long as its audio; a
    `clear_buffer` (the user interrupted) stops it where the play head is, which is what the
    session uses to work out the text actually spoken.
    """

    def __init__(self, sample_rate: int = SPEAKER_SAMPLE_RATE) -> None:
        super().__init__(
            label="virtual-speaker",
            capabilities=io.AudioOutputCapabilities(pause=False),
            sample_rate=sample_rate,
        )
        self._rate = sample_rate
        self._frames: list[np.ndarray] = []
        self._pushed = 0.0
        self._started: float | None = None
        self._finish_task: asyncio.Task[None] | None = None
        self.played: list[_Played] = []
        self.playback_starts: list[float] = []

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._started is None:
            self._started = time.time()
            self.playback_starts.append(self._started)
            self.on_playback_started(created_at=self._started)
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        self._frames.append(pcm.copy())
        self._pushed += frame.duration

    def flush(self) -> None:
        super().flush()
        if self._started is None or self._finish_task is not None:
            return
        self._finish_task = asyncio.create_task(self._play_out())

    def clear_buffer(self) -> None:
        if self._started is None:
            return
        if self._finish_task is not None:
            self._finish_task.cancel()
            self._finish_task = None
        position = min(self._pushed, max(0.0, time.time() - self._started))
        self._finish(position, interrupted=position < self._pushed)

    async def _play_out(self) -> None:
        started = self._started if self._started is not None else time.time()
        await asyncio.sleep(max(0.0, started + self._pushed - time.time()))
        self._finish_task = None
        self._finish(self._pushed, interrupted=False)

    def _finish(self, position: float, *, interrupted: bool) -> None:
        if self._started is None:
            return
        audio = np.concatenate(self._frames) if self._frames else np.zeros(0, dtype=np.int16)
        self.played.append(_Played(self._started, audio[: int(position * self._rate)]))
        self._frames, self._pushed, self._started = [], 0.0, None
        self.on_playback_finished(playback_position=position, interrupted=interrupted)

    def timeline(self, origin: float, min_seconds: float = 0.0) -> Pcm:
        """Everything played, placed at its time since `origin`."""
        end = max([min_seconds, *[(p.at - origin) + len(p.samples) / self._rate for p in self.played]])
        out = np.zeros(int(end * self._rate) + 1, dtype=np.int16)
        for p in self.played:
            start = max(0, int((p.at - origin) * self._rate))
            piece = p.samples[: len(out) - start]
            out[start : start + len(piece)] = piece
        return Pcm(out, self._rate)

    def played_audio(self) -> Pcm:
        """Everything played, back to back (for intelligibility checks)."""
        parts = [p.samples for p in self.played]
        return Pcm(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16), self._rate)


@dataclass
class SimulationResult:
    call_id: str
    delivered: bool
    user_turns: int
    agent_turns: int
    interrupted_turns: int
    response_latencies: list[float] = field(default_factory=list)
    agent_audio: Pcm | None = None


async def run_call_on_wav(
    settings: VoiceWorkerSettings,
    *,
    dispatch: DispatchInfo,
    wav: Pcm,
    profiles: ProfileSource,
    sink: TranscriptSink,
    out_path: Path | None = None,
    call_id: str | None = None,
    settle_seconds: float = 1.5,
    max_tail_seconds: float = 30.0,
) -> SimulationResult:
    """Runs one call on `wav`; returns once the agent has answered the last turn (or time ran out)."""
    call = await open_call(
        settings,
        call_id=call_id or f"sim-{uuid.uuid4().hex}",
        dispatch=dispatch,
        profiles=profiles,
        sink=sink,
    )
    audio_in = WavAudioInput(wav)
    speaker = VirtualSpeaker()
    sync = TranscriptSynchronizer(next_in_chain_audio=speaker, next_in_chain_text=None)
    call.session.input.audio = audio_in
    call.session.output.audio = sync.audio_output
    call.session.output.transcription = sync.text_output
    try:
        await call.session.start(call.agent, record=False)
        await audio_in.ended.wait()
        await _settle(call, settle_seconds, max_tail_seconds)
    finally:
        audio_in.close()
        delivered = await call.finish()
        await sync.aclose()
    origin = audio_in.started_at or time.time()
    if out_path is not None:
        write_wav(out_path, speaker.timeline(origin, min_seconds=wav.duration))
    return SimulationResult(
        call_id=call.call_id,
        delivered=delivered,
        user_turns=call.recorder.user_turns,
        agent_turns=call.recorder.agent_turns,
        interrupted_turns=call.recorder.interrupted_turns,
        response_latencies=list(call.recorder.response_latencies),
        agent_audio=speaker.played_audio(),
    )


async def _settle(call: Call, settle_seconds: float, max_tail_seconds: float) -> None:
    """Waits until user and agent have both been quiet for `settle_seconds` (bounded)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + max_tail_seconds
    quiet_since: float | None = None
    # The VAD needs a moment of silence to notice the end of the last sentence.
    await asyncio.sleep(1.0)
    while loop.time() < give_up:
        quiet = call.session.agent_state == "listening" and call.session.user_state != "speaking"
        if not quiet:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = loop.time()
        elif loop.time() - quiet_since >= settle_seconds:
            return
        await asyncio.sleep(0.1)
    log.warning("simulation tail timed out", call_id=call.call_id)


async def simulate(
    settings: VoiceWorkerSettings,
    *,
    conversation_id: str,
    agent_id: str,
    wav_path: Path,
    out_path: Path,
    profiles: ProfileSource,
    sink: TranscriptSink,
) -> SimulationResult:
    """`python -m voice_worker simulate`: sends leftovers first, then runs the call on the WAV."""
    emptied = await drain_orphans(
        settings.outbox_dir,
        sink,
        initial_backoff=settings.retry_initial_seconds,
        max_backoff=settings.retry_max_seconds,
        budget_seconds=settings.flush_timeout_seconds,
    )
    if emptied:
        log.info("earlier turns delivered", outboxes=emptied)
    return await run_call_on_wav(
        settings,
        dispatch=DispatchInfo(conversation_id=conversation_id, agent_id=agent_id),
        wav=read_wav(wav_path),
        profiles=profiles,
        sink=sink,
        out_path=out_path,
    )
