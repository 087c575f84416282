"""What Chromium's fake microphone says in a call test: espeak-ng sentences placed on a time line.

Chromium plays the WAV once from the moment the page opens the microphone, so each sentence is put
at a chosen second of that time line, and the test knows when (relative to the microphone opening)
each one is being spoken: before the agent arrived, during its greeting, while muted, and so on.
"""

from __future__ import annotations

import array
import sys
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devrun.sample_audio import resample, speak

RATE = 16_000


@dataclass(frozen=True)
class Line:
    """One sentence of the recording.

    Attributes:
        text: What is said.
        start: Seconds after the microphone opened when it starts.
        end: Seconds after the microphone opened when it ends.
    """

    text: str
    start: float
    end: float


def write_speech(path: Path, timeline: Sequence[tuple[float, str]], *, total: float) -> list[Line]:
    """Writes a 16 kHz mono WAV of `total` seconds with each `(start, text)` spoken from `start` on.

    Raises:
        ValueError: A sentence would overlap the next one or run past `total`.
    """
    samples = array.array("h", bytes(2 * int(total * RATE)))
    lines: list[Line] = []
    for start, text in timeline:
        spoken, rate = speak(text)
        voice = resample(spoken, rate, RATE)
        first = int(start * RATE)
        if lines and start < lines[-1].end:
            raise ValueError(f"{text!r} starts before {lines[-1].text!r} ends ({lines[-1].end:.1f} s)")
        if first + len(voice) > len(samples):
            raise ValueError(f"{text!r} runs past the end of the recording ({total} s)")
        samples[first : first + len(voice)] = voice
        lines.append(Line(text, start, start + len(voice) / RATE))
    if sys.byteorder == "big":
        samples.byteswap()  # WAV is little-endian
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())
    return lines
