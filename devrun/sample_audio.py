"""A sample call recording for `make run`'s voice example, spoken by espeak-ng on the spot.

The recording is what a caller would say to the agent: a short pause (the agent greets first), a
sentence, a pause long enough for the agent to answer in full, another sentence. It is written as
16 kHz mono 16-bit PCM, the usual telephony/STT format, so it also serves as a template for
recordings of your own. Pure standard library: `make run` does not need the voice extras for this.
"""

from __future__ import annotations

import array
import io
import shutil
import subprocess
import sys
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 16_000
SENTENCES = (
    "Hi, my internet connection keeps dropping every evening.",
    "Can you send a technician tomorrow morning?",
)
# Seconds of silence: before the first sentence (the greeting plays then), between sentences (the
# agent answers then; the offline responder repeats the question, so leave it time) and at the end.
LEAD_SECONDS = 3.0
GAP_SECONDS = 14.0
TAIL_SECONDS = 1.0
ESPEAK_TIMEOUT_SECONDS = 30.0


class SampleAudioError(RuntimeError):
    """espeak-ng is missing or failed; the message says what to do."""


@dataclass(frozen=True)
class SampleCall:
    """The outcome of making the sample: the file, or why there is none.

    Attributes:
        path: The WAV written, or None when it could not be made.
        problem: Why it could not be made (empty when `path` is set).
        sentences: What the caller says in it.
    """

    path: Path | None
    problem: str = ""
    sentences: tuple[str, ...] = SENTENCES


def espeak_binary() -> str | None:
    """espeak-ng on PATH, or None."""
    return shutil.which("espeak-ng")


def speak(text: str, *, voice: str = "en-us", binary: str | None = None) -> tuple[array.array[int], int]:
    """Speaks `text` with espeak-ng; returns its 16-bit mono samples and their sample rate.

    Raises:
        SampleAudioError: espeak-ng is missing or failed.
    """
    binary = binary or espeak_binary()
    if binary is None:
        raise SampleAudioError("espeak-ng is not installed (Debian/Ubuntu: sudo apt-get install espeak-ng)")
    try:
        done = subprocess.run(  # noqa: S603 - fixed program, text passed as one argument
            [binary, "-v", voice, "--stdout", text],
            capture_output=True,
            check=True,
            timeout=ESPEAK_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SampleAudioError(f"espeak-ng failed: {exc}") from None
    return _read_pcm16_mono(done.stdout)


def resample(samples: array.array[int], source_rate: int, target_rate: int) -> array.array[int]:
    """Linear-interpolation resampling with a light [1, 2, 1] low-pass first.

    The low-pass takes the edge off aliasing when going down (22.05 kHz → 16 kHz); for speech an STT
    model will hear, that is plenty, and it keeps this module free of numpy.
    """
    if source_rate == target_rate or not samples:
        return array.array("h", samples)
    n = len(samples)
    smooth = [(samples[max(i - 1, 0)] + 2 * samples[i] + samples[min(i + 1, n - 1)]) / 4.0 for i in range(n)]
    count = max(1, int(n * target_rate / source_rate))
    step = source_rate / target_rate
    out = array.array("h", bytes(2 * count))
    for j in range(count):
        position = j * step
        i = int(position)
        frac = position - i
        nxt = smooth[i + 1] if i + 1 < n else smooth[i]
        out[j] = max(-32768, min(32767, round(smooth[i] * (1.0 - frac) + nxt * frac)))
    return out


def compose(
    sentences: Sequence[str],
    *,
    rate: int = SAMPLE_RATE,
    lead: float = LEAD_SECONDS,
    gap: float = GAP_SECONDS,
    tail: float = TAIL_SECONDS,
    binary: str | None = None,
) -> array.array[int]:
    """`lead` s of silence, then each sentence followed by `gap` s (`tail` s after the last)."""
    out = _silence(lead, rate)
    for index, text in enumerate(sentences):
        samples, source_rate = speak(text, binary=binary)
        out += resample(samples, source_rate, rate)
        out += _silence(gap if index < len(sentences) - 1 else tail, rate)
    return out


def write_sample_call(path: Path, sentences: Sequence[str] = SENTENCES, *, binary: str | None = None) -> Path:
    """Writes the sample call to `path` (16 kHz mono, 16-bit PCM WAV) and returns it.

    Raises:
        SampleAudioError: espeak-ng is missing or failed.
    """
    samples = compose(sentences, binary=binary)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(_little_endian(samples))
    partial.replace(path)  # never leave a half-written file where the banner points
    return path


def make_sample_call(path: Path) -> SampleCall:
    """`write_sample_call`, reporting a problem instead of raising (make run goes on without it)."""
    try:
        return SampleCall(write_sample_call(path))
    except (SampleAudioError, OSError) as exc:
        return SampleCall(None, problem=str(exc))


def _silence(seconds: float, rate: int) -> array.array[int]:
    return array.array("h", bytes(2 * int(seconds * rate)))


def _read_pcm16_mono(wav_bytes: bytes) -> tuple[array.array[int], int]:
    # espeak-ng --stdout writes a RIFF header with unknown (0xFFFFFFFF) sizes; `wave` copes.
    try:
        with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise SampleAudioError(f"espeak-ng wrote {8 * wav.getsampwidth()}-bit audio, not 16-bit")
            channels, rate = wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise SampleAudioError(f"espeak-ng wrote no usable WAV: {exc}") from None
    # A truncated last frame (unknown data size) is dropped rather than misread.
    raw = raw[: len(raw) - len(raw) % (2 * channels)]
    samples = array.array("h")
    samples.frombytes(raw)
    if sys.byteorder == "big":
        samples.byteswap()
    if channels > 1:
        samples = array.array(
            "h", (sum(samples[i : i + channels]) // channels for i in range(0, len(samples), channels))
        )
    return samples, rate


def _little_endian(samples: array.array[int]) -> bytes:
    if sys.byteorder == "big":
        swapped = array.array("h", samples)
        swapped.byteswap()
        return swapped.tobytes()
    return samples.tobytes()
