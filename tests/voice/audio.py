"""Speech for voice tests: the same espeak-ng speech and word error rates the benchmarks use."""

from devrun.speech import RATE, SENTENCES, conversation_wav, speak, word_error_rate, word_errors

__all__ = ["RATE", "SENTENCES", "conversation_wav", "speak", "word_error_rate", "word_errors"]
