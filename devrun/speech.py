"""Speech made with espeak-ng (deterministic) and word error rates (jiwer), for tests and benchmarks alike."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import jiwer
import numpy as np

from voice_worker.wav import Pcm, parse_wav_bytes

RATE = 22_050

SENTENCES = (
    "I would like to check the status of my order.",
    "My internet connection keeps dropping every evening.",
    "Can you send a technician tomorrow morning?",
)


def speak(text: str, voice: str = "en-us") -> Pcm:
    out = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    return parse_wav_bytes(out).mono()


def conversation_wav(sentences: Sequence[str], *, lead: float, gap: float, tail: float = 1.0) -> Pcm:
    """`lead` seconds of silence, then each sentence followed by `gap` seconds of silence."""
    parts = [np.zeros(int(RATE * lead), dtype=np.int16)]
    for index, text in enumerate(sentences):
        parts.append(speak(text).samples)
        pause = gap if index < len(sentences) - 1 else tail
        parts.append(np.zeros(int(RATE * pause), dtype=np.int16))
    return Pcm(np.concatenate(parts), RATE)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits: substitutions + deletions + insertions, reference word count).

    Case and punctuation are ignored: the words are normalised here, so jiwer only aligns them.
    """
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref and not hyp:
        return 0, 0  # jiwer needs a word on one side at least; nothing said and nothing heard is right
    aligned = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return aligned.substitutions + aligned.deletions + aligned.insertions, len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word errors over the reference length."""
    errors, words = word_errors(reference, hypothesis)
    return errors / max(1, words)


def _words(text: str) -> list[str]:
    return "".join(ch.lower() if ch.isalnum() or ch == "'" else " " for ch in text).split()
