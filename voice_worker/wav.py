"""Reading and writing 16-bit PCM WAV data without trusting header sizes.

espeak-ng writes a WAV header with placeholder sizes when it writes to a pipe, so the parser takes
the sample data as "everything after the data chunk header".
"""

from __future__ import annotations

import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Pcm:
    """Mono or multi-channel int16 samples at one rate."""

    samples: np.ndarray  # int16, shape (n,) for mono or (n, channels)
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def mono(self) -> Pcm:
        if self.samples.ndim == 1:
            return self
        return Pcm(self.samples.mean(axis=1).astype(np.int16), self.sample_rate)


class WavFormatError(ValueError):
    """The bytes are not a 16-bit PCM WAV file."""


def parse_wav_bytes(data: bytes) -> Pcm:
    """Parses a 16-bit PCM WAV, tolerating the streaming placeholders espeak-ng writes."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavFormatError("not a RIFF/WAVE file")
    pos = 12
    channels = rate = bits = 0
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt_tag, channels, rate = struct.unpack("<HHI", data[body : body + 8])
            (bits,) = struct.unpack("<H", data[body + 14 : body + 16])
            if fmt_tag != 1 or bits != 16:
                raise WavFormatError("only 16-bit PCM WAV is supported")
        elif chunk_id == b"data":
            if not rate:
                raise WavFormatError("data chunk before fmt chunk")
            end = min(len(data), body + size) if size < 0x7FFF0000 else len(data)
            raw = data[body:end]
            raw = raw[: len(raw) - len(raw) % (2 * channels)]
            samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
            if channels > 1:
                samples = samples.reshape(-1, channels)
            return Pcm(samples, rate)
        pos = body + size + (size & 1)
    raise WavFormatError("no data chunk")


def read_wav(path: Path) -> Pcm:
    return parse_wav_bytes(path.read_bytes())


def write_wav(path: Path, pcm: Pcm) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 1 if pcm.samples.ndim == 1 else pcm.samples.shape[1]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(pcm.sample_rate)
        out.writeframes(pcm.samples.astype("<i2").tobytes())


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness of int16 samples in dBFS; -inf for silence."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))
    return float("-inf") if rms == 0 else 20 * float(np.log10(rms))
