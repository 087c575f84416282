"""Shared pieces of the voice benchmarks: speech made with espeak-ng, WER, an in-memory sink."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

import numpy as np

from voice_worker.profile import AgentProfile
from voice_worker.segments import Segment
from voice_worker.wav import Pcm, parse_wav_bytes

RATE = 22_050

# Ten things people say on a service call.
SERVICE_SENTENCES = (
    "I would like to check the status of my order.",
    "My internet connection keeps dropping every evening.",
    "Can you send a technician tomorrow morning?",
    "I was charged twice for the same invoice.",
    "Please update the billing address on my account.",
    "The router lights are blinking orange.",
    "How long will the refund take to arrive?",
    "I need to cancel my subscription today.",
    "The delivery was left at the wrong address.",
    "Could you reset my password please?",
)
VOICES = ("en-us", "en-gb", "en-us+f3")

PROFILE = AgentProfile(agent_id="bench", display_name="Sam", greeting="Hello, this is Sam.")


def speak(text: str, voice: str = "en-us") -> Pcm:
    out = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    return parse_wav_bytes(out).mono()


def call_wav(sentences: Sequence[str], *, lead: float, gap: float) -> Pcm:
    parts = [np.zeros(int(RATE * lead), dtype=np.int16)]
    for text in sentences:
        parts += [speak(text).samples, np.zeros(int(RATE * gap), dtype=np.int16)]
    return Pcm(np.concatenate(parts), RATE)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference word count), case and punctuation ignored."""
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def _words(text: str) -> list[str]:
    return "".join(ch.lower() if ch.isalnum() or ch == "'" else " " for ch in text).split()


class Profiles:
    async def get(self, agent_id: str) -> AgentProfile | None:
        return PROFILE


class CountingSink:
    """Takes transcripts in memory: the benchmarks measure the pipeline, not chat_svc."""

    def __init__(self) -> None:
        self.segments = 0

    async def report(
        self,
        conversation_id: str,
        segments: Sequence[Segment],
        call_metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.segments += len(segments)
