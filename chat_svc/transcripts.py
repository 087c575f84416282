"""ReportTranscript: spoken turns keyed by the reporter's segment id, never lost and never doubled.

Rules (the contract's, and the ones we chose where it is silent):
- A new segment id becomes a new message at the next seq (revision 1).
- The same id again updates that message in place (revision + 1); a report identical to what is
  stored is a no-op and answers with the same seq and revision, so retries are harmless.
- A final segment never turns back into an interim one: an interim report for a final segment is
  ignored (not an error), so a retry that arrives after finalisation does no damage.
- The role of a segment is fixed by its first report; a different role is INVALID_ARGUMENT.
- Transcripts are accepted for ENDED conversations too: the worker flushes after hang-up.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chat_svc.conversations import Conversations
from chat_svc.messages import MessageLog
from chat_svc.records import Message, Role, Source, TurnMetrics, now_us
from chat_svc.store import Collections, Document, message_from_doc, metrics_to_doc, store_errors
from chat_svc.validation import (
    LANGUAGE_PATTERN,
    SEGMENT_ID_PATTERN,
    SEGMENT_TEXT_MAX,
    SEGMENTS_MAX,
    RawTime,
    check_id,
)
from chat_svc.validation import duration_us as _duration_us
from chat_svc.validation import timestamp_us as _timestamp_us
from servicekit import context
from servicekit.auth import Principal
from servicekit.errors import (
    DomainError,
    ErrorKind,
    FieldViolation,
    Violations,
    invalid_argument,
    permission_denied,
)

# Optimistic updates retry when another writer changed the same segment in between.
_MAX_UPDATE_ATTEMPTS = 32
# Conversations are never deleted, so "this id exists" can be remembered (bounded).
_KNOWN_MAX = 10_000
# Segments whose stored message this replica remembers (about a thousand live calls' turns).
_LATEST_MAX = 10_000
# Call metadata from reporters: a few short, plain entries (keys are also MongoDB field names).
_CALL_METADATA_MAX_ENTRIES = 16
_CALL_METADATA_KEY = re.compile(r"[a-z0-9_]{1,40}")
_CALL_METADATA_VALUE_MAX = 200


@dataclass(frozen=True)
class SegmentInput:
    """One reported segment before validation. `role` is None for an unknown value."""

    segment_id: str
    role: Role | None
    text: str
    final: bool
    interrupted: bool
    start_time: RawTime | None
    end_time: RawTime | None
    language: str
    confidence: float
    end_of_turn_delay: RawTime | None = None
    llm_time_to_first_token: RawTime | None = None
    tts_time_to_first_byte: RawTime | None = None
    transcription_delay: RawTime | None = None


@dataclass(frozen=True)
class SegmentResult:
    segment_id: str
    seq: int
    revision: int
    created: bool


@dataclass(frozen=True)
class _Segment:
    """A validated segment, in stored units."""

    segment_id: str
    role: Role
    fields: dict[str, Any]


def segment_message_id(conversation_id: str, segment_id: str) -> str:
    """The message id of a transcript segment, derived from what identifies it.

    A segment's message is then found by primary key. Uniqueness still rests on the
    {conversation_id, segment_id} index, which also finds messages stored before ids were derived.
    """
    digest = hashlib.sha256(f"{conversation_id}\x00{segment_id}".encode()).hexdigest()
    return digest[:32]


def validate_call_metadata(entries: Mapping[str, str]) -> dict[str, str]:
    """The reporter's call metadata, or INVALID_ARGUMENT naming the bad entry."""
    violations = Violations()
    if len(entries) > _CALL_METADATA_MAX_ENTRIES:
        violations.add("call_metadata", f"at most {_CALL_METADATA_MAX_ENTRIES} entries")
    for key, value in entries.items():
        if not _CALL_METADATA_KEY.fullmatch(key):
            violations.add("call_metadata", "keys are 1 to 40 characters from a-z, 0-9 and _")
        elif len(value) > _CALL_METADATA_VALUE_MAX or not value.isprintable():
            violations.add(
                f"call_metadata[{key}]", f"at most {_CALL_METADATA_VALUE_MAX} printable characters"
            )
    violations.raise_if_any()
    return dict(entries)


def validate_segments(conversation_id: str, segments: Sequence[SegmentInput]) -> list[_Segment]:
    """Checks every field of every segment; one INVALID_ARGUMENT names all bad ones."""
    violations = Violations()
    check_id(violations, "conversation_id", conversation_id)
    if not segments:
        violations.add("segments", "must hold at least one segment")
    elif len(segments) > SEGMENTS_MAX:
        violations.add("segments", f"must hold at most {SEGMENTS_MAX} segments")
        violations.raise_if_any()
    valid: list[_Segment] = []
    for index, segment in enumerate(segments):
        path = f"segments[{index}]"
        if not segment.segment_id:
            violations.add(f"{path}.segment_id", "is required")
        elif not SEGMENT_ID_PATTERN.fullmatch(segment.segment_id):
            violations.add(
                f"{path}.segment_id", "must be 1 to 200 characters of A-Z, a-z, 0-9 and _ . : / @ + = -"
            )
        if segment.role is None:
            violations.add(f"{path}.role", "must be ROLE_USER or ROLE_AGENT")
        if len(segment.text) > SEGMENT_TEXT_MAX:
            violations.add(f"{path}.text", f"must be at most {SEGMENT_TEXT_MAX} characters")
        elif segment.final and not segment.text.strip():
            violations.add(f"{path}.text", "may be empty only for an interim segment")
        if segment.interrupted and segment.role is Role.USER:
            violations.add(f"{path}.interrupted", "applies to agent turns only")
        start = _timestamp_us(violations, f"{path}.start_time", segment.start_time)
        end = _timestamp_us(violations, f"{path}.end_time", segment.end_time)
        if start is not None and end is not None and end < start:
            violations.add(f"{path}.end_time", "must not be before start_time")
        if segment.language and not LANGUAGE_PATTERN.fullmatch(segment.language):
            violations.add(f"{path}.language", "must be a BCP-47 language tag such as 'en' or 'en-US'")
        if not 0.0 <= segment.confidence <= 1.0:  # also refuses NaN
            violations.add(f"{path}.confidence", "must be between 0 and 1")
        metrics = TurnMetrics(
            end_of_turn_delay_us=_duration_us(
                violations, f"{path}.metrics.end_of_turn_delay", segment.end_of_turn_delay
            ),
            llm_time_to_first_token_us=_duration_us(
                violations, f"{path}.metrics.llm_time_to_first_token", segment.llm_time_to_first_token
            ),
            tts_time_to_first_byte_us=_duration_us(
                violations, f"{path}.metrics.tts_time_to_first_byte", segment.tts_time_to_first_byte
            ),
            transcription_delay_us=_duration_us(
                violations, f"{path}.metrics.transcription_delay", segment.transcription_delay
            ),
        )
        if violations or segment.role is None:
            continue
        valid.append(
            _Segment(
                segment_id=segment.segment_id,
                role=segment.role,
                fields={
                    "text": segment.text,
                    "final": segment.final,
                    "interrupted": segment.interrupted,
                    "start_time": start,
                    "end_time": end,
                    "language": segment.language,
                    "confidence": float(segment.confidence),
                    "metrics": metrics_to_doc(metrics),
                },
            )
        )
    violations.raise_if_any()
    return valid


class Transcripts:
    """Applies reported segments to the message log."""

    def __init__(self, collections: Collections, conversations: Conversations, messages: MessageLog) -> None:
        self._c = collections
        self._conversations = conversations
        self._messages = messages
        # Conversation ids known to exist, with the call metadata already merged into each.
        self._known: dict[str, dict[str, str]] = {}
        # The message of each segment as this replica last stored it (bounded), so a turn's next
        # state is written without reading it first. Writes are conditional on the revision, so
        # a copy another replica made stale costs a read, never a lost update.
        self._latest: dict[str, Document] = {}

    async def report(
        self,
        principal: Principal,
        conversation_id: str,
        segments: Sequence[SegmentInput],
        call_metadata: Mapping[str, str] | None = None,
    ) -> list[SegmentResult]:
        """Stores the segments in order (one result per segment) and merges the call metadata."""
        if not principal.is_service:
            raise permission_denied("only services may report transcripts", "SERVICE_ONLY")
        valid = validate_segments(conversation_id, segments)
        call_metadata = validate_call_metadata(call_metadata or {})
        merged = self._known.get(conversation_id)
        fresh = {k: v for k, v in call_metadata.items() if merged is None or merged.get(k) != v}
        if merged is None or fresh:
            # The first report of a conversation checks that it exists with the same command.
            await self._conversations.merge_metadata(conversation_id, fresh)
            if merged is None:
                if len(self._known) >= _KNOWN_MAX:
                    self._known.clear()
                merged = self._known[conversation_id] = {}
            merged.update(fresh)
        results = [await self._apply(principal, conversation_id, i, s) for i, s in enumerate(valid)]
        # On the call's access log line ("rpc finished", INFO), not a line of its own: a second
        # JSON line for each of a call's several reports a second is CPU the live path needs.
        context.add_call_fields(
            conversation_id=conversation_id,
            segments=len(results),
            created=sum(r.created for r in results),
        )
        return results

    async def _apply(
        self, principal: Principal, conversation_id: str, index: int, segment: _Segment
    ) -> SegmentResult:
        message_id = segment_message_id(conversation_id, segment.segment_id)
        doc = self._latest.get(message_id)
        # True once `doc` was read from (or just written to) the store by this report.
        fresh = doc is None
        if doc is None:

            def build(seq: int) -> Document:
                now = now_us()
                return {
                    "_id": message_id,
                    "conversation_id": conversation_id,
                    "seq": seq,
                    "revision": 1,
                    "role": segment.role.value,
                    "source": Source.TRANSCRIPT.value,
                    "segment_id": segment.segment_id,
                    "sender_id": principal.subject,
                    "create_time": now,
                    "update_time": now,
                    **segment.fields,
                }

            # Inserted without a read first: most reports this replica has not seen start a turn.
            # A turn stored earlier (a retry, another replica, a restart) fails the insert on its
            # derived id, and `append` hands back the stored message to update.
            doc, created = await self._messages.append(
                conversation_id, build, ("segment_id", segment.segment_id)
            )
            if created:
                self._remember(doc)
                return SegmentResult(segment.segment_id, int(doc["seq"]), 1, True)
        for _ in range(_MAX_UPDATE_ATTEMPTS):
            current = message_from_doc(doc)
            if current.role is not segment.role:
                raise invalid_argument(
                    [FieldViolation(f"segments[{index}].role", "differs from the segment's first report")]
                )
            if _unchanged(current, segment) or (current.final and not segment.fields["final"]):
                if fresh:
                    return SegmentResult(segment.segment_id, current.seq, current.revision, False)
                # Nothing to write by this replica's copy, which another replica may have made
                # stale: the answer must come from the stored state.
                doc = await self._read(conversation_id, segment.segment_id)
                fresh = True
                continue
            changes = {**segment.fields, "update_time": now_us()}
            with store_errors():
                result = await self._c.messages.update_one(
                    {"_id": current.message_id, "revision": current.revision},
                    {"$set": changes, "$inc": {"revision": 1}},
                )
            if result.modified_count:
                # Matched on the revision read, so the stored document is exactly this one.
                stored = {**doc, **changes, "revision": current.revision + 1}
                self._remember(stored)
                self._messages.written("update", stored)
                return SegmentResult(segment.segment_id, current.seq, current.revision + 1, False)
            doc = await self._read(conversation_id, segment.segment_id)
            fresh = True
        raise DomainError(
            ErrorKind.UNAVAILABLE, "SEGMENT_CONTENTION", "the segment is being updated concurrently"
        )

    async def _read(self, conversation_id: str, segment_id: str) -> Document:
        doc = await self._messages.find_by(conversation_id, "segment_id", segment_id)
        if doc is None:  # messages are never deleted; only a broken store gets here
            raise RuntimeError("segment vanished during update")
        return doc

    def _remember(self, doc: Document) -> None:
        if len(self._latest) >= _LATEST_MAX:
            self._latest.clear()
        self._latest[str(doc["_id"])] = doc


def _unchanged(current: Message, segment: _Segment) -> bool:
    stored = {
        "text": current.text,
        "final": current.final,
        "interrupted": current.interrupted,
        "start_time": current.start_time_us,
        "end_time": current.end_time_us,
        "language": current.language,
        "confidence": current.confidence,
        "metrics": metrics_to_doc(current.metrics),
    }
    return stored == segment.fields
