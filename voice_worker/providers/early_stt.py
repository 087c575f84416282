"""A non-streaming STT behind a VAD of its own: transcription starts early, the turn's words are
reported once, when the turn is over.

LiveKit wraps a non-streaming STT (Whisper here) in `stt.StreamAdapter`, which transcribes an
utterance when the VAD reports its end: after the whole end-of-turn silence (0.5 s), so Whisper's
time comes on top of that silence. This adapter's VAD reports the end of speech after a shorter
silence (`transcribe_after`, e.g. 0.25 s), and the turn so far is transcribed at once, while the end
of the turn is still being waited out.

Turn taking is unchanged. The turn's text is held, and reported as ONE final transcript only when
the silence after its last stretch of speech has reached `report_after` (the session's end-of-turn
silence). The session, whose own VAD ends the turn, never commits a turn without a
transcript; so it never commits one while a later stretch of it is still being transcribed (it
would store half a sentence and answer twice).

Speech resuming before the report continues the same turn, and the next transcription is of the
WHOLE turn, from its first word, pause included: Whisper given the two halves of a sentence apart
got them wrong far more often (a word error of 30-40 % against 15-25 %) than given the sentence.
The turn's audio is kept from the VAD's own frames, so it is exactly what the VAD judged. A turn
longer than `MAX_SEGMENT_SECONDS` is transcribed in segments of about that length, each once
complete, so a long monologue is not transcribed again from its start at every pause.

Captions while the turn is open: every transcription of the turn that finishes before the turn's
report is sent at once as an INTERIM transcript of the words so far, and while the person keeps
talking the turn so far is transcribed every `interim_every` seconds of audio (one at a time in
the worker; 0 turns these off) and sent as an interim too. Interims never decide anything: the session
commits a turn on the final alone, and an interim that would arrive after its turn's final is
dropped, so a caption can only ever grow into the stored words.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from livekit import rtc
from livekit.agents import stt, utils, vad
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

log = structlog.get_logger("voice_worker.providers.early_stt")

# The wrapped STT retries in `recognize`; the stream itself does not.
_STREAM_CONN_OPTIONS = APIConnectOptions(max_retry=0, timeout=DEFAULT_API_CONNECT_OPTIONS.timeout)
# A turn's audio is transcribed whole up to about this long; beyond it, in segments (see above).
MAX_SEGMENT_SECONDS = 20.0


# Captions while people talk are extra work for the CPU that the turns' own transcriptions need:
# one runs at a time in the whole worker (calls run as threads of it), and a call whose turn it is
# not simply shows its next caption later.
class _CaptionSlot:
    """The worker's one caption transcription. A holder whose call's thread died without letting
    go loses it after `STALE_SECONDS`, so captions cannot stop for the worker's whole life."""

    STALE_SECONDS = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: tuple[object, float] | None = None

    def take(self, holder: object) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._holder is not None and now - self._holder[1] < self.STALE_SECONDS:
                return False
            self._holder = (holder, now)
            return True

    def give_back(self, holder: object) -> None:
        with self._lock:
            if self._holder is not None and self._holder[0] is holder:
                self._holder = None


_CAPTION_SLOT = _CaptionSlot()


class EarlyTranscriber(stt.STT[Any]):
    """`wrapped` (not streaming) made streaming with `vad`; see the module docstring.

    Args:
        wrapped: The non-streaming STT.
        vad: Cuts speech into stretches; its minimum silence is when transcription starts.
        report_after: Silence (seconds after the end of speech) after which the turn's text is
            reported; at least the session's end-of-turn silence.
        interim_every: Seconds of a turn's audio between interim transcriptions while the person
            is still talking (0: only the interims of the early transcriptions).
    """

    def __init__(
        self, *, wrapped: stt.STT[Any], vad: vad.VAD, report_after: float, interim_every: float = 0.0
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=True))
        self._wrapped = wrapped
        self._vad = vad
        self._report_after = report_after
        self._interim_every = interim_every

    @property
    def model(self) -> str:
        return self._wrapped.model

    @property
    def provider(self) -> str:
        return self._wrapped.provider

    def prewarm(self) -> None:
        self._wrapped.prewarm()

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        return await self._wrapped.recognize(buffer=buffer, language=language, conn_options=conn_options)

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return _EarlyStream(self, language=language, conn_options=conn_options)


class _EarlyStream(stt.RecognizeStream):
    def __init__(
        self, owner: EarlyTranscriber, *, language: NotGivenOr[str], conn_options: APIConnectOptions
    ) -> None:
        super().__init__(stt=owner, conn_options=_STREAM_CONN_OPTIONS)
        self._owner = owner
        self._language = language
        self._wrapped_conn_options = conn_options
        # The current turn: one transcription per segment of it, in the order spoken (one segment
        # unless the turn is longer than MAX_SEGMENT_SECONDS). The last one is of `_segment`.
        self._turn: list[asyncio.Task[stt.SpeechData | None]] = []
        # The audio of the turn's open segment since its first word (None: no turn is open), and
        # whether the last transcription in `_turn` is of it (it is replaced by the next one).
        self._segment: list[rtc.AudioFrame] | None = None
        self._segment_samples = 0
        self._segment_transcribed = False
        self._report: asyncio.Task[None] | None = None
        # Reports of turns that were over when the next speech began, still waiting for Whisper.
        self._earlier: set[asyncio.Task[None]] = set()
        self._due = 0.0  # when the silence after the last stretch ends the turn
        self._last_end: float | None = None
        # Counts turns whose final was sent or that were left to report on their own: an interim
        # started in an earlier turn must not be sent as this one's.
        self._turn_no = 0
        self._interim: asyncio.Task[stt.SpeechData | None] | None = None
        self._interim_samples = 0  # `_segment_samples` when the last interim transcription began

    async def _transcribe(self, frames: list[rtc.AudioFrame]) -> stt.SpeechData | None:
        event = await self._owner._wrapped.recognize(
            buffer=utils.merge_frames(frames),
            language=self._language,
            conn_options=self._wrapped_conn_options,
        )
        if not event.alternatives or not event.alternatives[0].text.strip():
            return None
        return event.alternatives[0]

    def _send_turn(self, parts: list[asyncio.Task[stt.SpeechData | None]]) -> None:
        """Reports the finished transcriptions `parts` as one final transcript."""
        texts: list[stt.SpeechData] = []
        for part in parts:
            if part.cancelled():
                continue
            if part.exception() is not None:
                log.warning("transcription failed", error=str(part.exception()))
                continue
            data = part.result()
            if data is not None:
                texts.append(data)
        if not texts:
            return
        text = " ".join(t.text.strip() for t in texts)
        confidence = sum(t.confidence for t in texts) / len(texts)
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                alternatives=[stt.SpeechData(language=texts[0].language, text=text, confidence=confidence)],
                speech_end_time=self._last_end,
            )
        )

    async def _report_when_over(self, due: float) -> None:
        """Reports the turn once every stretch is transcribed and the silence lasted until `due`.

        Cancelled when speech resumes first; the transcriptions go on (they belong to the turn).
        """
        parts = list(self._turn)
        await asyncio.wait(parts)
        await asyncio.sleep(max(0.0, due - time.time()))
        # Nothing awaits from here on: speech resuming now starts a new turn.
        self._turn = [t for t in self._turn if t not in parts]
        if asyncio.current_task() is self._report:
            self._segment = None  # this turn is over (an earlier turn's report leaves the next alone)
            self._turn_no += 1
        self._send_turn(parts)

    def _keep(self, frames: list[rtc.AudioFrame]) -> None:
        if self._segment is not None:
            self._segment.extend(frames)
            self._segment_samples += sum(f.samples_per_channel for f in frames)

    def _on_vad_event(self, ev: vad.VADEvent) -> None:
        if ev.type == vad.VADEventType.INFERENCE_DONE:
            # Every window the VAD judged, speech and pauses alike, while a turn is open.
            self._keep(list(ev.frames))
            if ev.speaking:
                self._maybe_transcribe_interim()
        elif ev.type == vad.VADEventType.START_OF_SPEECH:
            resumed = False
            if self._report is not None and not self._report.done():
                if time.time() - ev.speech_duration < self._due:
                    self._report.cancel()  # resumed within the turn: it goes on
                    resumed = True
                else:
                    # The turn was over before this speech began (its transcription is just slow):
                    # it is reported on its own when done; what follows is the next turn.
                    self._earlier.add(self._report)
                    self._report.add_done_callback(self._earlier.discard)
                    self._turn = []
                    self._turn_no += 1
            if not resumed or self._segment is None:
                # A new turn: its audio starts with the VAD's speech buffer (the speech so far and
                # the padding before it); the windows after it come as they are judged.
                self._segment, self._segment_samples, self._segment_transcribed = [], 0, False
                self._interim_samples = 0
                self._keep(list(ev.frames))
            self._report = None
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH))
        elif ev.type == vad.VADEventType.END_OF_SPEECH:
            self._last_end = time.time() - ev.silence_duration - ev.inference_duration
            self._transcribe_segment(ev)
            self._event_ch.send_nowait(
                stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, speech_end_time=self._last_end)
            )
            if self._report is not None:
                self._report.cancel()
            self._due = self._last_end + self._owner._report_after
            self._report = asyncio.create_task(self._report_when_over(self._due), name="early-stt-report")

    def _transcribe_segment(self, ev: vad.VADEvent) -> None:
        """Transcribes the open segment of the turn, from its first word, replacing the last try."""
        if self._segment is None:  # an end without a start (the VAD was flushed): the stretch alone
            self._segment, self._segment_samples, self._segment_transcribed = [], 0, False
            self._keep(list(ev.frames))
        task = asyncio.create_task(self._transcribe(list(self._segment)), name="early-stt")
        if self._segment_transcribed and self._turn:
            superseded = self._turn[-1]
            superseded.cancel()  # its result is no longer wanted (Whisper, once running, finishes)
            self._turn[-1] = task
        else:
            self._turn.append(task)
        task.add_done_callback(self._make_interim_sender(self._turn_no, task, partial=False))
        self._segment_transcribed = True
        rate = self._segment[0].sample_rate if self._segment else 1
        if self._segment_samples / rate >= MAX_SEGMENT_SECONDS:
            # This segment is complete; the turn goes on in a new one, begun with the next words.
            self._segment, self._segment_samples, self._segment_transcribed = [], 0, False

    def _maybe_transcribe_interim(self) -> None:
        """While the person talks: the turn so far, every `interim_every` seconds of its audio."""
        if not self._owner._interim_every or self._segment is None or not self._segment:
            return
        if self._interim is not None and not self._interim.done():
            return  # one at a time: under load captions come less often, never queue up
        rate = self._segment[0].sample_rate
        if (self._segment_samples - self._interim_samples) / rate < self._owner._interim_every:
            return
        holder = object()
        if not _CAPTION_SLOT.take(holder):
            return  # another call's caption is being transcribed; try at the next window
        self._interim_samples = self._segment_samples
        task = asyncio.create_task(self._transcribe(list(self._segment)), name="early-stt-interim")
        self._interim = task
        task.add_done_callback(lambda _: _CAPTION_SLOT.give_back(holder))
        task.add_done_callback(self._make_interim_sender(self._turn_no, task, partial=True))

    def _make_interim_sender(
        self, turn_no: int, task: asyncio.Task[stt.SpeechData | None], *, partial: bool
    ) -> Callable[[asyncio.Task[stt.SpeechData | None]], None]:
        def send(_: asyncio.Task[stt.SpeechData | None]) -> None:
            if task.cancelled() or task.exception() is not None or turn_no != self._turn_no:
                return
            if self._earlier:
                return  # an earlier turn's final is still to come; its words come first
            if partial:
                # The turn's finished earlier segments, then this reading of the open one.
                held = self._turn[:-1] if self._segment_transcribed else self._turn
                parts = [*held, task]
            elif task in self._turn:
                parts = list(self._turn)
            else:
                return  # superseded by a transcription of more of the turn
            found = [
                data
                for part in parts
                if part.done() and not part.cancelled() and part.exception() is None
                for data in (part.result(),)
                if data is not None and data.text.strip()
            ]
            if not found:
                return
            text = " ".join(data.text.strip() for data in found)
            with contextlib.suppress(utils.aio.channel.ChanClosed):
                self._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.INTERIM_TRANSCRIPT,
                        alternatives=[stt.SpeechData(language=found[0].language, text=text)],
                    )
                )

        return send

    async def _run(self) -> None:
        vad_stream = self._owner._vad.stream()

        async def forward() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(item)
            vad_stream.end_input()

        async def listen() -> None:
            async for ev in vad_stream:
                self._on_vad_event(ev)

        tasks = [asyncio.create_task(forward()), asyncio.create_task(listen())]
        try:
            await asyncio.gather(*tasks)
            # The input ended (the call is closing): what was said is reported now, in order.
            if self._earlier:
                await asyncio.wait(set(self._earlier))
            if self._report is not None:
                self._report.cancel()
            if self._turn:
                await asyncio.wait(self._turn)
                self._send_turn(self._turn)
                self._turn = []
        finally:
            pending = [*tasks, *self._turn, *self._earlier, *([self._report] if self._report else [])]
            if self._interim is not None:
                pending.append(self._interim)
            await utils.aio.cancel_and_wait(*pending)
            with contextlib.suppress(Exception):
                await vad_stream.aclose()
