"""The early transcriber: Whisper starts after a short silence, a turn's words are reported once.

A scripted VAD stands in for Silero (the test says when speech starts and ends, and its audio
"says" words: one sample per character) and a fake STT for Whisper (it returns the words in the audio
it was given, after as long as the test says).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt, utils, vad
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr

from tests.support.eventually import eventually
from voice_worker.providers import early_stt
from voice_worker.providers.early_stt import EarlyTranscriber

pytestmark = pytest.mark.unit

RATE = 16_000
REPORT_AFTER = 0.3


def frame(samples: int = RATE // 100) -> rtc.AudioFrame:
    return rtc.AudioFrame(b"\x00\x00" * samples, RATE, 1, samples)


def spoken(words: str) -> rtc.AudioFrame:
    """A frame that "says" `words`: one sample per character, its code (silence is 0)."""
    samples = np.array([ord(c) for c in words], dtype=np.int16)
    return rtc.AudioFrame(samples.tobytes(), RATE, 1, len(samples))


def heard_in(frames: list[rtc.AudioFrame]) -> str:
    """What the fake STT makes of `frames`: the words they say, pauses as spaces."""
    samples = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames]) if frames else []
    return " ".join("".join(chr(v) if v else " " for v in samples).split())


class ScriptedVADStream:
    """What EarlyTranscriber uses of a VAD stream; events come from the test, not from audio.

    Like Silero it sends every window it judged (`INFERENCE_DONE`, with the window's audio) before
    the start or end of speech that window decided.
    """

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

    def _window(self, audio: rtc.AudioFrame) -> None:
        self.events.put_nowait(
            vad.VADEvent(vad.VADEventType.INFERENCE_DONE, 0, 0.0, 0.0, 0.0, frames=[audio])
        )

    def say(self, words: str) -> None:
        """Speech starts (the start's speech buffer says the words) and ends after a short silence."""
        self._window(spoken(words))
        self.events.put_nowait(
            vad.VADEvent(vad.VADEventType.START_OF_SPEECH, 0, 0.0, 0.05, 0.0, frames=[spoken(words)])
        )
        self._window(frame())  # the silence the VAD waited for
        self.events.put_nowait(
            vad.VADEvent(vad.VADEventType.END_OF_SPEECH, 0, 0.0, 1.0, 0.0, frames=[spoken(words), frame()])
        )

    def talking(self, *words: str, starts: bool = True) -> None:
        """Speech (starts and) goes on: one window judged as speech per word (none ends it)."""
        if starts:
            self.events.put_nowait(
                vad.VADEvent(vad.VADEventType.START_OF_SPEECH, 0, 0.0, 0.05, 0.0, frames=[])
            )
        for word in words:
            self.events.put_nowait(
                vad.VADEvent(
                    vad.VADEventType.INFERENCE_DONE, 0, 0.0, 0.0, 0.0, frames=[spoken(word)], speaking=True
                )
            )

    def stops(self) -> None:
        """The silence the VAD waited for, then the end of speech."""
        self._window(frame())
        self.events.put_nowait(vad.VADEvent(vad.VADEventType.END_OF_SPEECH, 0, 0.0, 1.0, 0.0, frames=[]))

    def more(self, words: str) -> None:
        """Speech resumes: the windows in the pause, then the new words, then the end again."""
        self._window(frame())
        self.events.put_nowait(vad.VADEvent(vad.VADEventType.START_OF_SPEECH, 0, 0.0, 0.05, 0.0, frames=[]))
        self._window(spoken(words))
        self._window(frame())
        self.events.put_nowait(
            vad.VADEvent(vad.VADEventType.END_OF_SPEECH, 0, 0.0, 1.0, 0.0, frames=[spoken(words), frame()])
        )


class ScriptedVAD:
    def __init__(self) -> None:
        self.streams: list[ScriptedVADStream] = []

    def stream(self) -> ScriptedVADStream:
        self.streams.append(ScriptedVADStream())
        return self.streams[-1]


class SlowSTT(stt.STT[Any]):
    """Returns the words in the audio after `seconds`; non-streaming, like Whisper."""

    def __init__(self, seconds: float) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.seconds = seconds
        self.asked: list[str] = []  # what it was given to transcribe, in order

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        text = heard_in(frames)
        self.asked.append(text)
        await asyncio.sleep(self.seconds)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text, confidence=0.9)],
        )


async def finals(stream: stt.RecognizeStream, into: list[tuple[float, str]]) -> None:
    async for event in stream:
        if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
            into.append((time.monotonic(), event.alternatives[0].text))


async def everything(stream: stt.RecognizeStream, into: list[tuple[str, str]]) -> None:
    """Every transcript the stream sends, as ("interim" | "final", text), in order."""
    async for event in stream:
        if event.type == stt.SpeechEventType.INTERIM_TRANSCRIPT:
            into.append(("interim", event.alternatives[0].text))
        elif event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
            into.append(("final", event.alternatives[0].text))


async def started(
    transcription_seconds: float, interim_every: float = 0.0
) -> tuple[ScriptedVADStream, stt.RecognizeStream, list[tuple[float, str]], asyncio.Task[None], SlowSTT]:
    scripted = ScriptedVAD()
    whisper = SlowSTT(transcription_seconds)
    transcriber = EarlyTranscriber(
        wrapped=whisper,
        vad=scripted,  # type: ignore[arg-type]  # duck-typed stand-in for Silero
        report_after=REPORT_AFTER,
        interim_every=interim_every,
    )
    stream = transcriber.stream()
    stream.push_frame(frame())  # the stream opens its VAD stream once it runs
    await eventually(lambda: scripted.streams, within=1.0, interval=0.01, what="the VAD stream")
    heard: list[tuple[float, str]] = []
    return scripted.streams[0], stream, heard, asyncio.create_task(finals(stream, heard)), whisper


async def test_a_pause_shorter_than_the_turn_silence_keeps_one_turn_transcribed_whole() -> None:
    vad_stream, stream, heard, reader, whisper = await started(transcription_seconds=0.05)
    vad_stream.say("I need to")
    await asyncio.sleep(REPORT_AFTER / 2)  # transcribed by now, but the turn is not over
    vad_stream.more("cancel my subscription")
    await asyncio.sleep(REPORT_AFTER + 0.2)
    assert [text for _, text in heard] == ["I need to cancel my subscription"]
    # The second transcription was of the whole turn, pause included, not of its second half.
    assert whisper.asked == ["I need to", "I need to cancel my subscription"]
    stream.end_input()
    await reader


async def test_the_words_are_reported_when_the_turn_silence_is_over_not_before() -> None:
    vad_stream, stream, heard, reader, _ = await started(transcription_seconds=0.01)
    ended = time.monotonic()
    vad_stream.say("hello")
    await asyncio.sleep(REPORT_AFTER + 0.2)
    assert [text for _, text in heard] == ["hello"]
    # Held until the silence is over (the session's VAD ends the turn then), then sent at once.
    assert REPORT_AFTER - 0.05 <= heard[0][0] - ended <= REPORT_AFTER + 0.15
    stream.end_input()
    await reader


async def test_a_slow_transcription_stays_its_own_turn_when_the_next_one_begins() -> None:
    vad_stream, stream, heard, reader, whisper = await started(transcription_seconds=REPORT_AFTER + 0.4)
    vad_stream.say("first turn")
    await asyncio.sleep(REPORT_AFTER + 0.1)  # the turn is over; Whisper is still busy
    vad_stream.say("second turn")
    await asyncio.sleep(2 * (REPORT_AFTER + 0.4) + 0.3)
    assert [text for _, text in heard] == ["first turn", "second turn"]
    assert whisper.asked == ["first turn", "second turn"]  # the next turn starts afresh
    stream.end_input()
    await reader


async def test_the_end_of_the_call_reports_what_was_said_in_order() -> None:
    vad_stream, stream, heard, reader, _ = await started(transcription_seconds=REPORT_AFTER + 0.2)
    vad_stream.say("one")
    await asyncio.sleep(REPORT_AFTER + 0.05)
    vad_stream.say("two")
    stream.end_input()  # hung up before either was reported
    await asyncio.wait_for(reader, 5)
    assert [text for _, text in heard] == ["one", "two"]


async def test_a_long_turn_is_transcribed_in_segments_each_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every stretch here is "long": each segment ends with its stretch.
    monkeypatch.setattr(early_stt, "MAX_SEGMENT_SECONDS", 1 / RATE)
    vad_stream, stream, heard, reader, whisper = await started(transcription_seconds=0.05)
    vad_stream.say("a long story")
    await asyncio.sleep(REPORT_AFTER / 2)
    vad_stream.more("goes on")
    await asyncio.sleep(REPORT_AFTER + 0.2)
    assert [text for _, text in heard] == ["a long story goes on"]
    assert whisper.asked == ["a long story", "goes on"]
    stream.end_input()
    await reader


async def test_the_early_transcription_is_shown_as_an_interim_before_the_turn_is_reported() -> None:
    vad_stream, stream, _, reader, _ = await started(transcription_seconds=0.01)
    reader.cancel()
    seen: list[tuple[str, str]] = []
    watcher = asyncio.create_task(everything(stream, seen))
    vad_stream.say("hello there")
    await eventually(lambda: ("final", "hello there") in seen, within=2.0, what="the final")
    # The caption came first, with the same words; nothing after the final.
    assert seen == [("interim", "hello there"), ("final", "hello there")]
    stream.end_input()
    await watcher


async def test_a_long_utterance_gets_captions_while_it_is_spoken() -> None:
    # A caption after every 4 samples of the turn (a "word" of the fake is a sample per character).
    vad_stream, stream, _, reader, whisper = await started(transcription_seconds=0.01, interim_every=4 / RATE)
    reader.cancel()
    seen: list[tuple[str, str]] = []
    watcher = asyncio.create_task(everything(stream, seen))
    vad_stream.talking("I would ")
    await eventually(lambda: ("interim", "I would") in seen, within=2.0, what="the first caption")
    vad_stream.talking("like a refund", starts=False)
    await eventually(
        lambda: any(kind == "interim" and "refund" in text for kind, text in seen),
        within=2.0,
        what="the grown caption",
    )
    vad_stream.stops()
    await eventually(lambda: any(kind == "final" for kind, _ in seen), within=2.0, what="the final")
    interims = [text for kind, text in seen if kind == "interim"]
    finals_seen = [text for kind, text in seen if kind == "final"]
    assert finals_seen == ["I would like a refund"]
    assert seen[-1] == ("final", "I would like a refund")
    # Each caption is a reading of the turn from its first word.
    assert all("I would like a refund".startswith(text) for text in interims), interims
    assert len(whisper.asked) >= 3  # two captions while talking, then the turn
    stream.end_input()
    await watcher


async def test_a_caption_that_would_come_after_its_turn_was_reported_is_dropped() -> None:
    vad_stream, stream, _, reader, _ = await started(
        transcription_seconds=REPORT_AFTER + 0.3, interim_every=1 / RATE
    )
    reader.cancel()
    seen: list[tuple[str, str]] = []
    watcher = asyncio.create_task(everything(stream, seen))
    # A slow caption begins while talking; the turn ends and is reported before it is done.
    vad_stream.talking("stop")
    vad_stream.stops()
    await eventually(lambda: any(kind == "final" for kind, _ in seen), within=3.0, what="the final")
    await asyncio.sleep(REPORT_AFTER + 0.4)  # the caption's transcription is over by now
    assert seen[-1] == ("final", "stop")
    stream.end_input()
    await watcher


def test_one_caption_at_a_time_in_the_worker_and_a_dead_holder_loses_the_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slot = early_stt._CaptionSlot()
    first, second = object(), object()
    assert slot.take(first)
    assert not slot.take(second)
    slot.give_back(second)  # not the holder: changes nothing
    assert not slot.take(second)
    slot.give_back(first)
    assert slot.take(second)
    # A holder that never gives it back (its call's thread died) loses it once it is stale.
    monkeypatch.setattr(early_stt._CaptionSlot, "STALE_SECONDS", 0.0)
    assert slot.take(first)
