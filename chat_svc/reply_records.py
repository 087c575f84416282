"""Agent replies and call summaries as the domain sees them, and as MongoDB stores them (no grpc).

A reply is a message (role AGENT) with a `reply` sub-document; a summary is a `summary`
sub-document of its conversation. Two top-level fields exist only while work is in flight, so the
sweeper finds abandoned work by a small partial index instead of a scan:

- `reply_lease` (message): until when the replica generating the reply answers for it (µs).
- `summary_lease` (conversation): until when a summary attempt may run, or when the next begins.

`reply_for` (message) is the `message_id` of the user message answered, unique per conversation:
one reply per user message, however often SendMessage is retried.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Document = dict[str, Any]


class ReplyState(enum.StrEnum):
    GENERATING = "GENERATING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class SummaryState(enum.StrEnum):
    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"


class GeneratorKind(enum.StrEnum):
    """What produced an agent's words (the values `llmkit.choice.GeneratorKind` uses)."""

    CLOUD_MODEL = "cloud"
    OPENAI_COMPATIBLE_MODEL = "openai-compatible"
    SCRIPTED_RESPONDER = "scripted"


class SummaryKind(enum.StrEnum):
    ABSTRACT = "ABSTRACT"  # written by a language model
    EXTRACT = "EXTRACT"  # quoted from the transcript by the scripted responder


@dataclass(frozen=True)
class Generator:
    kind: GeneratorKind
    model: str


@dataclass(frozen=True)
class Reply:
    """Where an agent's reply to a typed message is."""

    state: ReplyState
    in_reply_to_seq: int
    failure_reason: str = ""
    generator: Generator | None = None
    attempt: int = 1


@dataclass(frozen=True)
class Summary:
    """A call's summary: PENDING while it is made, then READY (with text) or FAILED."""

    state: SummaryState
    text: str = ""
    kind: SummaryKind | None = None
    generator: Generator | None = None
    failure_reason: str = ""
    update_time_us: int | None = None
    attempts: int = 0


def generator_to_doc(generator: Generator | None) -> Document | None:
    return None if generator is None else {"kind": generator.kind.value, "model": generator.model}


def _generator_from_doc(doc: Any) -> Generator | None:
    if not isinstance(doc, Mapping):
        return None
    try:
        return Generator(GeneratorKind(str(doc.get("kind"))), str(doc.get("model") or ""))
    except ValueError:
        return None


def reply_to_doc(reply: Reply) -> Document:
    return {
        "state": reply.state.value,
        "to_seq": reply.in_reply_to_seq,
        "failure_reason": reply.failure_reason,
        "generator": generator_to_doc(reply.generator),
        "attempt": reply.attempt,
    }


def reply_from_doc(doc: Any) -> Reply | None:
    if not isinstance(doc, Mapping):
        return None
    return Reply(
        state=ReplyState(doc["state"]),
        in_reply_to_seq=int(doc.get("to_seq") or 0),
        failure_reason=str(doc.get("failure_reason") or ""),
        generator=_generator_from_doc(doc.get("generator")),
        attempt=int(doc.get("attempt") or 1),
    )


def summary_from_doc(doc: Any) -> Summary | None:
    if not isinstance(doc, Mapping):
        return None
    kind = doc.get("kind")
    update_time = doc.get("update_time")
    return Summary(
        state=SummaryState(doc["state"]),
        text=str(doc.get("text") or ""),
        kind=SummaryKind(kind) if kind else None,
        generator=_generator_from_doc(doc.get("generator")),
        failure_reason=str(doc.get("failure_reason") or ""),
        update_time_us=None if update_time is None else int(update_time),
        attempts=int(doc.get("attempts") or 0),
    )
