"""Shared pieces of the voice benchmarks: speech made with espeak-ng, WER, an in-memory sink."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Speech and WER are the ones the voice tests use, so benchmarks and tests measure the same way.
from devrun.speech import conversation_wav, speak, word_errors
from voice_worker.profile import AgentProfile
from voice_worker.segments import Segment
from voice_worker.settings import VoiceWorkerSettings

__all__ = ["conversation_wav", "offline_settings", "speak", "word_errors"]

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


def offline_settings(outbox_dir: str) -> VoiceWorkerSettings:
    """Worker settings for an offline run with no services to reach."""
    return VoiceWorkerSettings(
        _env_file=None,
        SYNTERA_DEV_MODE=True,
        VOICE_WORKER_PROVIDERS="offline",
        VOICE_WORKER_OUTBOX_DIR=outbox_dir,
    )


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
