"""The early transcriber: Whisper starts after a short silence, a turn's words are reported once.

A scripted VAD stands in for Silero (the test says when speech starts and ends) and a fake STT for
Whisper (it names the stretch it was given and takes as long as the test says). A stretch is told
apart by its length in samples.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import stt, utils, vad
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr

from tests.support.eventually import eventually
from voice_worker.providers.early_stt import EarlyTranscriber

pytestmark = pytest.mark.unit

RATE = 16_000
REPORT_AFTER = 0.3
# Stretch names by their length in samples (a stretch's frames reach the STT merged).
NAMES: dict[int, str] = {}


def frame(samples: int = RATE // 100) -> rtc.AudioFrame:
    return rtc.AudioFrame(b"\x00\x00" * samples, RATE, 1, samples)


class ScriptedVADStream:
    """What EarlyTranscriber uses of a VAD stream; events come from the test, not from audio."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[vad.VADEvent | None] = asyncio.Queue()

    def push_frame(self, _frame: rtc.AudioFrame) -> None:
        pass

    def flush(self) -> None:
        pass

    def end_input(self) -> None:
        self.events.put_nowait(None)

    async def aclose(self) -> None:
        pass

    def __aiter__(self) -> AsyncIterator[vad.VADEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[vad.VADEvent]:
        while (event := await self.events.get()) is not None:
            yield event

    def start(self) -> None:
        self.events.put_nowait(vad.VADEvent(vad.VADEventType.START_OF_SPEECH, 0, 0.0, 0.05, 0.0))

    def end(self, name: str) -> None:
        """End of a stretch of speech, named by its length for the fake STT."""
        samples = 160 * (len(NAMES) + 1)
        NAMES[samples] = name
        stretch = frame(samples)
        self.events.put_nowait(
            vad.VADEvent(vad.VADEventType.END_OF_SPEECH, 0, 0.0, 1.0, 0.0, frames=[stretch])
        )


class ScriptedVAD:
    def __init__(self) -> None:
        self.streams: list[ScriptedVADStream] = []

    def stream(self) -> ScriptedVADStream:
        self.streams.append(ScriptedVADStream())
        return self.streams[-1]


class SlowSTT(stt.STT[Any]):
    """Returns the name of the stretch after `seconds`; non-streaming, like Whisper."""

    def __init__(self, seconds: float) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.seconds = seconds

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        await asyncio.sleep(self.seconds)
        name = NAMES.get(sum(f.samples_per_channel for f in frames), "?")
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=name, confidence=0.9)],
        )


async def finals(stream: stt.RecognizeStream, into: list[tuple[float, str]]) -> None:
    async for event in stream:
        if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
            into.append((time.monotonic(), event.alternatives[0].text))


async def started(
    transcription_seconds: float,
) -> tuple[ScriptedVADStream, stt.RecognizeStream, list[tuple[float, str]], asyncio.Task[None]]:
    scripted = ScriptedVAD()
    transcriber = EarlyTranscriber(
        wrapped=SlowSTT(transcription_seconds),
        vad=scripted,  # type: ignore[arg-type]  # duck-typed stand-in for Silero
        report_after=REPORT_AFTER,
    )
    stream = transcriber.stream()
    stream.push_frame(frame())  # the stream opens its VAD stream once it runs
    await eventually(lambda: scripted.streams, within=1.0, interval=0.01, what="the VAD stream")
    heard: list[tuple[float, str]] = []
    return scripted.streams[0], stream, heard, asyncio.create_task(finals(stream, heard))


async def test_a_pause_shorter_than_the_turn_silence_keeps_one_turn() -> None:
    vad_stream, stream, heard, reader = await started(transcription_seconds=0.05)
    vad_stream.start()
    vad_stream.end("I need to")
    await asyncio.sleep(REPORT_AFTER / 2)  # transcribed by now, but the turn is not over
    vad_stream.start()
    vad_stream.end("cancel my subscription")
    await asyncio.sleep(REPORT_AFTER + 0.2)
    assert [text for _, text in heard] == ["I need to cancel my subscription"]
    stream.end_input()
    await reader


async def test_the_words_are_reported_when_the_turn_silence_is_over_not_before() -> None:
    vad_stream, stream, heard, reader = await started(transcription_seconds=0.01)
    ended = time.monotonic()
    vad_stream.start()
    vad_stream.end("hello")
    await asyncio.sleep(REPORT_AFTER + 0.2)
    assert [text for _, text in heard] == ["hello"]
    # Held until the silence is over (the session's VAD ends the turn first), then sent at once.
    assert REPORT_AFTER - 0.05 <= heard[0][0] - ended <= REPORT_AFTER + 0.15
    stream.end_input()
    await reader


async def test_a_slow_transcription_stays_its_own_turn_when_the_next_one_begins() -> None:
    vad_stream, stream, heard, reader = await started(transcription_seconds=REPORT_AFTER + 0.4)
    vad_stream.start()
    vad_stream.end("first turn")
    await asyncio.sleep(REPORT_AFTER + 0.1)  # the turn is over; Whisper is still busy
    vad_stream.start()
    vad_stream.end("second turn")
    await asyncio.sleep(2 * (REPORT_AFTER + 0.4) + 0.3)
    assert [text for _, text in heard] == ["first turn", "second turn"]
    stream.end_input()
    await reader


async def test_the_end_of_the_call_reports_what_was_said_in_order() -> None:
    vad_stream, stream, heard, reader = await started(transcription_seconds=REPORT_AFTER + 0.2)
    vad_stream.start()
    vad_stream.end("one")
    await asyncio.sleep(REPORT_AFTER + 0.05)
    vad_stream.start()
    vad_stream.end("two")
    stream.end_input()  # hung up before either was reported
    await asyncio.wait_for(reader, 5)
    assert [text for _, text in heard] == ["one", "two"]
