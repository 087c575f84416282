"""One call: the agent session with its providers, transcript recorder, outbox and sender.

Shared by the LiveKit job (`worker.py`) and the WAV simulation (`simulate.py`), so both run the
very same pipeline: VAD → STT → LLM → TTS, with the same transcript path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from livekit.agents import Agent, AgentSession, llm
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

from voice_worker.history import RESUME_GREETING, Turn, chat_context
from voice_worker.outbox import Outbox, outbox_path
from voice_worker.profile import AgentProfile, fallback_profile
from voice_worker.providers import Providers, build_providers
from voice_worker.sender import OutboxSender, TranscriptSink
from voice_worker.settings import VoiceWorkerSettings
from voice_worker.transcripts import TranscriptRecorder
from voice_worker.typed import is_typed

log = structlog.get_logger("voice_worker.call")

DEFAULT_INSTRUCTIONS = "You are a helpful voice assistant. Keep answers short and plain."


class ProfileSource(Protocol):
    async def get(self, agent_id: str) -> AgentProfile | None: ...


@dataclass(frozen=True)
class DispatchInfo:
    """What the dispatch metadata says: which conversation, which agent profile, and whether this
    agent takes over a call an earlier agent left (`resume`)."""

    conversation_id: str
    agent_id: str
    resume: bool = False


class ProfileAgent(Agent):
    """The agent as its profile describes it; greets the user when the session starts.

    An agent that takes over a call (`history` given) starts with the conversation so far and says
    it is back instead of greeting as if the call had just begun.
    """

    def __init__(self, profile: AgentProfile, history: list[Turn] | None = None) -> None:
        super().__init__(
            instructions=profile.instructions or DEFAULT_INSTRUCTIONS,
            chat_ctx=chat_context(history) if history else None,
        )
        self.profile = profile
        self.resumed = history is not None

    async def on_enter(self) -> None:
        greeting = RESUME_GREETING if self.resumed else self.profile.greeting
        if greeting:
            self.session.say(greeting, allow_interruptions=True)


def session_for(providers: Providers) -> AgentSession[None]:
    """An AgentSession for the providers; offline runs use plain VAD turn taking (no cloud models).

    Offline, the turn ends after `providers.end_of_turn_silence` of silence: the VAD's end-of-speech
    silence and the minimum endpointing delay are the same value, so one setting says how long a
    person may pause.
    """
    turn_handling: dict[str, Any] = {
        "turn_detection": "vad" if providers.mode == "offline" else None,
        "interruption": {"mode": "vad", "resume_false_interruption": False},
        "preemptive_generation": {"enabled": False},
    }
    if providers.end_of_turn_silence is not None:
        turn_handling["endpointing"] = {"min_delay": providers.end_of_turn_silence}
    if turn_handling["turn_detection"] is None:
        del turn_handling["turn_detection"]
    if providers.mode == "cloud":
        del turn_handling["interruption"]["mode"]
    return AgentSession(
        stt=providers.stt,
        llm=providers.llm,
        tts=providers.tts,
        vad=providers.vad,
        turn_handling=turn_handling,  # type: ignore[arg-type]
        user_away_timeout=None,
    )


class Call:
    """A call in progress. Create with `open_call`, end with `finish`."""

    def __init__(
        self,
        *,
        settings: VoiceWorkerSettings,
        call_id: str,
        dispatch: DispatchInfo,
        profile: AgentProfile,
        providers: Providers,
        outbox: Outbox,
        sender: OutboxSender,
        history: list[Turn] | None = None,
    ) -> None:
        self.settings = settings
        self.call_id = call_id
        self.dispatch = dispatch
        self.profile = profile
        self.providers = providers
        self.outbox = outbox
        self.sender = sender
        self.recorder = TranscriptRecorder(call_id, dispatch.conversation_id, outbox, sender.notify)
        self.session = session_for(providers)
        self.agent = ProfileAgent(profile, history)
        self.session.on("user_input_transcribed", self._on_user_input)
        self.session.on("conversation_item_added", self._on_item_added)
        self._finished = False

    def _on_user_input(self, ev: UserInputTranscribedEvent) -> None:
        self.recorder.user_transcribed(
            ev.transcript, is_final=ev.is_final, language=str(ev.language or ""), at=ev.created_at
        )

    def _on_item_added(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, llm.ChatMessage):
            return  # handoffs and other item types are not turns
        if item.role == "user" and is_typed(item.id):
            return  # a typed message: SendMessage stored it already (voice_worker.typed)
        self.recorder.message_committed(
            role=item.role,
            item_id=item.id,
            text=item.text_content or "",
            interrupted=item.interrupted,
            metrics=dict(item.metrics),
            created_at=item.created_at,
        )

    async def finish(self) -> bool:
        """Closes the session and flushes the outbox (bounded wait); True when all was delivered.

        What is not delivered in time stays in the outbox file for the next start.
        """
        if self._finished:
            return True
        self._finished = True
        try:
            await self.session.aclose()
        finally:
            self.recorder.close()
            # A turn still interim (heard, never committed) is final as it stands now the call is over.
            self.outbox.finalize_open_turns()
            delivered = await self.sender.flush(self.settings.flush_timeout_seconds)
            await self.sender.aclose()
            pending = self.outbox.pending_count()
            self.outbox.close()
        log.info(
            "call finished",
            call_id=self.call_id,
            conversation_id=self.dispatch.conversation_id,
            user_turns=self.recorder.user_turns,
            agent_turns=self.recorder.agent_turns,
            interrupted_turns=self.recorder.interrupted_turns,
            delivered=delivered,
            left_in_outbox=pending,
        )
        return delivered


async def open_call(
    settings: VoiceWorkerSettings,
    *,
    call_id: str,
    dispatch: DispatchInfo,
    profiles: ProfileSource,
    sink: TranscriptSink,
    history: list[Turn] | None = None,
) -> Call:
    """Fetches the profile, picks providers, opens the outbox and starts its sender.

    `history` (the conversation so far) makes the agent one that takes over the call.
    """
    profile = await profiles.get(dispatch.agent_id)
    if profile is None:
        profile = fallback_profile(dispatch.agent_id)
    providers = build_providers(settings, profile)
    outbox = Outbox(outbox_path(settings.outbox_dir, call_id))
    sender = OutboxSender(
        outbox,
        sink,
        initial_backoff=settings.retry_initial_seconds,
        max_backoff=settings.retry_max_seconds,
        call_metadata=providers.labels(),
    )
    sender.start()
    log.info(
        "call starting",
        call_id=call_id,
        conversation_id=dispatch.conversation_id,
        agent_id=profile.agent_id,
        provider_mode=providers.mode,
        resumed=history is not None,
        stt_model=providers.stt_model,
        llm_model=providers.llm_model,
        tts_model=providers.tts_model,
    )
    return Call(
        settings=settings,
        call_id=call_id,
        dispatch=dispatch,
        profile=profile,
        providers=providers,
        outbox=outbox,
        sender=sender,
        history=history,
    )
