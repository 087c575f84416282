"""Word error rate of the offline STT (Whisper tiny.en) on espeak-ng speech, and on the agent's voice.

`python -m bench.voice_wer`: 10 service-call sentences in three espeak-ng voices; then the profile
responder's replies to them spoken by the agent's TTS and transcribed again (intelligibility).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from bench.voice_common import PROFILE, SERVICE_SENTENCES, VOICES, speak, word_errors
from llmkit.responder import ProfileResponder
from servicekit import logs
from voice_worker.providers.espeak_tts import EspeakTTS
from voice_worker.providers.whisper_stt import WhisperSTT, to_whisper_input
from voice_worker.wav import Pcm


def _transcribe(stt: WhisperSTT, pcm: Pcm) -> str:
    from livekit import rtc

    frame = rtc.AudioFrame(pcm.samples.tobytes(), pcm.sample_rate, 1, len(pcm.samples))
    text, _ = stt.transcribe(to_whisper_input([frame]))
    return text


async def _agent_voice(text: str) -> Pcm:
    tts = EspeakTTS(voice="en-us")
    frame = await tts.synthesize(text).collect()
    return Pcm(np.frombuffer(frame.data, dtype=np.int16).copy(), frame.sample_rate)


async def main() -> None:
    logs.configure("WARNING", "console")
    stt = WhisperSTT(cpu_threads=2, beam_size=1)
    stt.prewarm()
    print("offline STT: faster-whisper, Whisper tiny.en (int8, CPU), beam 1")
    total_err = total_words = 0
    audio_seconds = compute_seconds = 0.0
    for voice in VOICES:
        err = words = 0
        for sentence in SERVICE_SENTENCES:
            pcm = speak(sentence, voice)
            started = time.perf_counter()
            hyp = _transcribe(stt, pcm)
            compute_seconds += time.perf_counter() - started
            audio_seconds += pcm.duration
            e, n = word_errors(sentence, hyp)
            err, words = err + e, words + n
        total_err, total_words = total_err + err, total_words + words
        print(f"  espeak-ng voice {voice:9s}: WER {err / words:6.1%} ({err}/{words} words)")
    speed = compute_seconds / audio_seconds
    print(f"  all voices          : WER {total_err / total_words:6.1%}; {speed:.2f}x real time")
    responder = ProfileResponder(PROFILE)
    err = words = 0
    for sentence in SERVICE_SENTENCES:
        reply = responder.reply(sentence)
        hyp = _transcribe(stt, await _agent_voice(reply))
        e, n = word_errors(reply, hyp)
        err, words = err + e, words + n
    print(f"intelligibility (STT on the agent's replies): WER {err / words:6.1%} ({err}/{words} words)")


if __name__ == "__main__":
    asyncio.run(main())
