"""Whisper with an encoder window the length of the utterance hears as well as with the full 30 s one.

Real Whisper tiny.en (the bundled model) on espeak-ng sentences; the word error is summed over
them, so one unlucky word does not decide.
"""

from __future__ import annotations

import numpy as np
import pytest
from livekit import rtc

from devrun.sample_audio import speak
from tests.voice.audio import SENTENCES, word_errors
from voice_worker.providers import whisper_stt
from voice_worker.providers.whisper_stt import WhisperSTT, fits_short_window, repeats_itself, to_whisper_input

pytestmark = pytest.mark.unit

MORE = ("Okay, stop, thank you very much.", "How long will the refund take to arrive?")


def _utterance(text: str) -> np.ndarray:
    samples, rate = speak(text)
    return to_whisper_input([rtc.AudioFrame(samples.tobytes(), rate, 1, len(samples))])


def _word_error(stt: WhisperSTT, sentences: tuple[str, ...]) -> float:
    errors = words = 0
    for sentence in sentences:
        heard, confidence = stt.transcribe(_utterance(sentence))
        assert 0.0 < confidence <= 1.0
        e, n = word_errors(sentence, heard)
        errors, words = errors + e, words + n
    return errors / words


def test_the_short_window_hears_as_well_as_the_full_one() -> None:
    sentences = (*SENTENCES, *MORE)
    short = _word_error(WhisperSTT(short_window=True), sentences)
    full = _word_error(WhisperSTT(short_window=False), sentences)
    assert short <= max(full, 0.15), (short, full)


def test_silence_is_heard_as_nothing() -> None:
    assert WhisperSTT(short_window=True).transcribe(np.zeros(16_000, dtype=np.float32)) == ("", 0.0)


def test_only_utterances_that_fit_whisper_s_window_take_the_short_path() -> None:
    assert fits_short_window(np.zeros(16_000 * 20, dtype=np.float32))
    assert not fits_short_window(np.zeros(16_000 * 29 + 1, dtype=np.float32))


def test_a_run_of_three_words_said_twice_in_a_row_is_a_repetition() -> None:
    assert repeats_itself("I would like to check my order. I would like to check my order")
    assert repeats_itself("Can you send? Can you send? Can you send? Can you")
    assert repeats_itself("please call me back, call me back tomorrow")
    assert not repeats_itself("I would like to check the status of my order.")
    assert not repeats_itself("no, no, I said the other one")
    assert not repeats_itself("thank you, thank you")
    assert not repeats_itself("")


def test_a_short_decode_that_repeats_itself_is_transcribed_again_the_standard_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    utterance = _utterance(SENTENCES[0])
    standard = WhisperSTT(short_window=False).transcribe(utterance)
    doubled = f"{SENTENCES[0]} {SENTENCES[0]}"
    monkeypatch.setattr(whisper_stt, "_transcribe_short", lambda *_: (doubled, 0.9))
    assert WhisperSTT(short_window=True).transcribe(utterance) == standard
    assert not repeats_itself(standard[0])
