"""Turns AgentSession events into transcript segments and writes them to the outbox.

Segment ids: `ChatMessage.id` is random per session, so ids combine the call
(the LiveKit job id, or the simulated call id) with a turn key:
- user turns: `{call}:user:{n}`, n counting user turns in the call. Interim text and the committed
  message share the id, because interim events carry no item id with an STT pipeline.
- agent turns: `{call}:agent:{item id}`, reported once, when the message is committed (with the
  text actually spoken when it was interrupted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from voice_worker.outbox import Outbox
from voice_worker.segments import Metrics, Segment, clip_text, segment_id

log = structlog.get_logger("voice_worker.transcripts")


class TranscriptRecorder:
    """Records one call's turns. Event handlers are synchronous: they only write to SQLite."""

    def __init__(
        self,
        call_id: str,
        conversation_id: str,
        outbox: Outbox,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.call_id = call_id
        self.conversation_id = conversation_id
        self._outbox = outbox
        self._notify = notify
        self._user_turn = 0
        self._user_finals: list[str] = []
        self._user_started: float | None = None
        self._last_end_of_turn: float | None = None
        self._last_transcription: float | None = None
        self.user_turns = 0
        self.agent_turns = 0
        self.interrupted_turns = 0
        # End of user speech to the agent starting to speak, per answered turn (seconds).
        self.response_latencies: list[float] = []

    def user_transcribed(
        self, text: str, *, is_final: bool, language: str = "", at: float | None = None
    ) -> None:
        """Interim or final STT text of the current user turn (reported as interim until committed)."""
        if self._user_started is None:
            self._user_started = at if at is not None else time.time()
        parts = [*self._user_finals, text] if text.strip() else list(self._user_finals)
        if is_final and text.strip():
            self._user_finals.append(text.strip())
        current = " ".join(p.strip() for p in parts if p.strip())
        if not current:
            return
        self._put(
            Segment(
                segment_id=segment_id(self.call_id, "user", str(self._user_turn)),
                role="user",
                text=clip_text(current),
                final=False,
                start_time=self._user_started,
                language=language,
            )
        )

    def message_committed(
        self,
        *,
        role: str,
        item_id: str,
        text: str,
        interrupted: bool,
        metrics: Mapping[str, Any],
        created_at: float,
        language: str = "",
    ) -> None:
        """A user or agent message was added to the chat history (final)."""
        text = text.strip()
        started = _float(metrics.get("started_speaking_at"))
        stopped = _float(metrics.get("stopped_speaking_at"))
        if role == "user":
            self._commit_user(text, started or self._user_started or created_at, stopped, metrics, language)
        elif role == "assistant":
            if not text:
                return  # nothing was heard: there is no turn to store
            latency = _float(metrics.get("e2e_latency"))
            if latency is not None:
                self.response_latencies.append(latency)
            self.agent_turns += 1
            self.interrupted_turns += int(interrupted)
            self._put(
                Segment(
                    segment_id=segment_id(self.call_id, "agent", item_id),
                    role="agent",
                    text=clip_text(text),
                    final=True,
                    interrupted=interrupted,
                    start_time=started or created_at,
                    end_time=stopped,
                    language=language,
                    metrics=Metrics(
                        end_of_turn_delay=self._last_end_of_turn,
                        llm_time_to_first_token=_float(metrics.get("llm_node_ttft")),
                        tts_time_to_first_byte=_float(metrics.get("tts_node_ttfb")),
                        transcription_delay=self._last_transcription,
                    ),
                )
            )
            self._last_end_of_turn = None
            self._last_transcription = None

    def close(self) -> None:
        """Ends the call: a user turn heard but never committed is stored as final as it stands."""
        if self._user_finals:
            self._commit_user(" ".join(self._user_finals), self._user_started or time.time(), None, {}, "")

    def _commit_user(
        self, text: str, started: float, stopped: float | None, metrics: Mapping[str, Any], language: str
    ) -> None:
        if not text:
            # An empty commit would be refused (final text must not be empty); the interim, if
            # any, is finalised from what was heard.
            text = " ".join(self._user_finals)
            if not text:
                self._reset_user()
                return
        self._last_end_of_turn = _float(metrics.get("end_of_turn_delay"))
        self._last_transcription = _float(metrics.get("transcription_delay"))
        self.user_turns += 1
        self._put(
            Segment(
                segment_id=segment_id(self.call_id, "user", str(self._user_turn)),
                role="user",
                text=clip_text(text),
                final=True,
                start_time=started,
                end_time=stopped,
                language=language,
                metrics=Metrics(
                    end_of_turn_delay=self._last_end_of_turn, transcription_delay=self._last_transcription
                ),
            )
        )
        self._user_turn += 1
        self._reset_user()

    def _reset_user(self) -> None:
        self._user_finals = []
        self._user_started = None

    def _put(self, segment: Segment) -> None:
        self._outbox.put(self.conversation_id, segment)
        log.debug(
            "transcript segment recorded",
            segment_id=segment.segment_id,
            role=segment.role,
            final=segment.final,
            interrupted=segment.interrupted,
        )
        self._notify()


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
