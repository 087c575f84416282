"""Fake VAD, STT, LLM and TTS that play a scripted call, in the manner of livekit/agents' own tests.

A `Script` says when the caller speaks (seconds after the first audio frame reaches the session)
and what the agent answers. The fakes act it out on the clock: the VAD reports start and end of
speech at those times, the STT sends an interim and then the final transcript, the LLM answers the
last user message from the script, and the TTS returns silence as long as the words would take.
A real `AgentSession` runs between them, so turn taking, interruptions and the chat items it
commits are LiveKit's own; only the models are fake. Everything runs in process, in seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc
from livekit.agents import llm, stt, tts, utils, vad
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.voice import io

from llmkit.responder_llm import last_user_text

RATE = 16_000
FRAME_SECONDS = 0.02
VAD_INTERVAL = 0.05
SILENCE_FOR_VAD = 0.1  # how long after the words end the fake VAD reports the end of speech


@dataclass(frozen=True)
class Utterance:
    """The caller speaks `text` from `start` to `end` (seconds); the STT is final `stt_delay` later."""

    start: float
    end: float
    text: str
    stt_delay: float = 0.05


@dataclass
class Script:
    utterances: list[Utterance] = field(default_factory=list)
    # The agent's answer to each user message, by its text; anything else gets `default_reply`.
    replies: dict[str, str] = field(default_factory=dict)
    default_reply: str = "I see."
    llm_ttft: float = 0.05
    tts_ttfb: float = 0.05
    seconds_per_word: float = 0.12

    def say(self, start: float, end: float, text: str, reply: str | None = None) -> Script:
        self.utterances.append(Utterance(start, end, text))
        if reply is not None:
            self.replies[text] = reply
        return self


class _Clock:
    """Seconds since the first audio frame reached a stream, shared by one stream's script."""

    def __init__(self) -> None:
        self._zero = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._zero

    async def until(self, at: float) -> None:
        await asyncio.sleep(max(0.0, at - self.now()))


class ScriptedVAD(vad.VAD):
    def __init__(self, script: Script) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=VAD_INTERVAL))
        self.script = script

    def stream(self) -> vad.VADStream:
        return _ScriptedVADStream(self)


class _ScriptedVADStream(vad.VADStream):
    def __init__(self, owner: ScriptedVAD) -> None:
        super().__init__(owner)
        self._script = owner.script

    def _event(self, kind: vad.VADEventType, said: Utterance, now: float, *, speaking: bool) -> None:
        self._event_ch.send_nowait(
            vad.VADEvent(
                type=kind,
                samples_index=int(now * RATE),
                timestamp=now,
                speech_duration=max(0.0, min(now, said.end) - said.start),
                silence_duration=max(0.0, now - said.end),
                speaking=speaking,
                probability=1.0 if speaking else 0.0,
            )
        )

    async def _main_task(self) -> None:
        await self._input_ch.recv()
        clock = _Clock()
        for said in self._script.utterances:
            await clock.until(said.start)
            self._event(vad.VADEventType.START_OF_SPEECH, said, clock.now(), speaking=True)
            # Inference results while the caller speaks: LiveKit interrupts the agent on these.
            while clock.now() < said.end:
                await asyncio.sleep(VAD_INTERVAL)
                self._event(vad.VADEventType.INFERENCE_DONE, said, clock.now(), speaking=True)
            await clock.until(said.end + SILENCE_FOR_VAD)
            self._event(vad.VADEventType.END_OF_SPEECH, said, clock.now(), speaking=False)
        async for _ in self._input_ch:
            pass


class ScriptedSTT(stt.STT[Any]):
    """A streaming STT with interim results: half the words mid-utterance, all of them once final.

    It answers a flush at once, as streaming providers do: the session flushes when it closes and
    would otherwise wait two seconds for a transcript of the silence after the last words.
    """

    def __init__(self, script: Script) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=True, interim_results=True, manual_flush=True)
        )
        self.script = script

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError("the scripted STT only streams")

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return _ScriptedRecognizeStream(self, conn_options)


class _ScriptedRecognizeStream(stt.RecognizeStream):
    def __init__(self, owner: ScriptedSTT, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=owner, conn_options=conn_options)
        self._script = owner.script
        self._started = asyncio.Event()

    def _send(self, text: str, *, final: bool) -> None:
        kind = stt.SpeechEventType.FINAL_TRANSCRIPT if final else stt.SpeechEventType.INTERIM_TRANSCRIPT
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=kind,
                alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text, confidence=0.9)],
            )
        )

    async def _run(self) -> None:
        script = asyncio.create_task(self._act())
        try:
            async for data in self._input_ch:
                if isinstance(data, self._FlushSentinel):
                    self._send("", final=True)  # nothing is pending beyond what the script sends
                elif not self._started.is_set():
                    self._started.set()
        finally:
            await utils.aio.cancel_and_wait(script)

    async def _act(self) -> None:
        await self._started.wait()
        clock = _Clock()
        for said in self._script.utterances:
            words = said.text.split()
            await clock.until((said.start + said.end) / 2)
            self._send(" ".join(words[: max(1, len(words) // 2)]), final=False)
            await clock.until(said.end + said.stt_delay)
            self._send(said.text, final=True)


class ScriptedLLM(llm.LLM[Any]):
    """Answers the last user message with the script's reply, word by word after `llm_ttft`."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script
        self.asked: list[str] = []

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _ScriptedLLMStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _ScriptedLLMStream(llm.LLMStream):
    def __init__(
        self,
        owner: ScriptedLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(owner, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._owner = owner

    async def _run(self) -> None:
        heard = last_user_text(self._chat_ctx)
        self._owner.asked.append(heard)
        reply = self._owner.script.replies.get(heard, self._owner.script.default_reply)
        await asyncio.sleep(self._owner.script.llm_ttft)
        chunk_id = uuid.uuid4().hex
        for index, word in enumerate(reply.split()):
            piece = word if index == 0 else f" {word}"
            self._event_ch.send_nowait(
                llm.ChatChunk(id=chunk_id, delta=llm.ChoiceDelta(role="assistant", content=piece))
            )


class SilentTTS(tts.TTS[Any]):
    """Non-streaming, like espeak-ng: silence as long as the words would take to say."""

    def __init__(self, script: Script) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=RATE, num_channels=1)
        self.script = script
        self.spoken: list[str] = []

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        self.spoken.append(text)
        return _SilentStream(self, text, conn_options)


class _SilentStream(tts.ChunkedStream):
    def __init__(self, owner: SilentTTS, text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=owner, input_text=text, conn_options=conn_options)
        self._script = owner.script

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        await asyncio.sleep(self._script.tts_ttfb)
        output_emitter.initialize(
            request_id=uuid.uuid4().hex, sample_rate=RATE, num_channels=1, mime_type="audio/pcm"
        )
        seconds = len(self.input_text.split()) * self._script.seconds_per_word
        output_emitter.push(b"\x00\x00" * int(seconds * RATE))
        output_emitter.flush()


class SilentMicrophone(io.AudioInput):
    """The caller's audio: silent frames in real time (the scripted VAD and STT need no sound)."""

    def __init__(self) -> None:
        super().__init__(label="silent-microphone")
        self._closed = False
        self._sent = 0
        self._started: float | None = None

    def close(self) -> None:
        self._closed = True

    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed:
            raise StopAsyncIteration
        now = time.monotonic()
        if self._started is None:
            self._started = now
        await asyncio.sleep(max(0.0, self._started + self._sent * FRAME_SECONDS - now))
        self._sent += 1
        samples = int(RATE * FRAME_SECONDS)
        return rtc.AudioFrame(b"\x00\x00" * samples, RATE, 1, samples)
