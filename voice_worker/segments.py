"""Transcript segments as the worker records them, before any wire format.

A segment is one user or agent turn. Its id is stable: it is derived from the job (or simulated
call) id and a turn key, and it is stored with the segment in the outbox, so a retry or a worker
restart reports the same id and chat_svc updates the same message instead of adding one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["user", "agent"]

# chat_svc bounds (protos/syntera/conversation/v1/resources.proto).
MAX_SEGMENT_ID = 200
MAX_TEXT = 20_000


@dataclass(frozen=True)
class Metrics:
    """Per-turn latency figures in seconds; None when not measured."""

    end_of_turn_delay: float | None = None
    llm_time_to_first_token: float | None = None
    tts_time_to_first_byte: float | None = None
    # End of user speech to the final transcript; overlaps end_of_turn_delay (the turn waits for it).
    transcription_delay: float | None = None

    def empty(self) -> bool:
        return (
            self.end_of_turn_delay is None
            and self.llm_time_to_first_token is None
            and self.tts_time_to_first_byte is None
            and self.transcription_delay is None
        )


@dataclass(frozen=True)
class Segment:
    """One reported state of a turn (interim or final)."""

    segment_id: str
    role: Role
    text: str
    final: bool
    interrupted: bool = False
    start_time: float | None = None  # unix seconds
    end_time: float | None = None
    language: str = ""
    confidence: float | None = None
    metrics: Metrics = field(default_factory=Metrics)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(raw: str) -> Segment:
        data: dict[str, Any] = json.loads(raw)
        data["metrics"] = Metrics(**data.get("metrics") or {})
        return Segment(**data)


def segment_id(call_id: str, role: Role, key: str) -> str:
    """`{call}:{role}:{key}`, trimmed from the left of the call id to fit chat_svc's limit."""
    suffix = f":{role}:{key}"
    return f"{call_id[: MAX_SEGMENT_ID - len(suffix)]}{suffix}"


def clip_text(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT]
