"""LiveKit webhooks: verified on the exact bytes received, then turned into call events.

The LiveKit server signs each webhook with a JWT issued by its webhook API key, carrying the
base64 SHA-256 of the body, valid for five minutes; it sends the JWT as the raw `Authorization`
header. livekit-api's `WebhookReceiver` checks signature, issuer (the key), expiry and hash. Any
failure is UNAUTHENTICATED and nothing is recorded; only then is the body parsed.

Only the events that shape a call are kept: room started and finished, participant joined and
left (an aborted connection counts as left), for users and agents in rooms named after
conversations. Track, egress and ingress events, and other rooms, are acknowledged and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt
import structlog
from google.protobuf import json_format
from livekit import api as lk_api
from livekit.protocol import models as lk_models
from livekit.protocol import webhook as lk_webhook

from agent_svc.call_ledger import CallLedger
from agent_svc.call_record import CallEvent, EventKind, Role
from servicekit import ids
from servicekit.errors import DomainError, ErrorKind, FieldViolation, invalid_argument

log = structlog.get_logger("agent_svc.webhooks")

_KINDS = {
    "room_started": EventKind.ROOM_STARTED,
    "room_finished": EventKind.ROOM_FINISHED,
    "participant_joined": EventKind.PARTICIPANT_JOINED,
    "participant_left": EventKind.PARTICIPANT_LEFT,
    "participant_connection_aborted": EventKind.PARTICIPANT_LEFT,
}
_ROLES: dict[int, Role] = {
    lk_models.ParticipantInfo.STANDARD: Role.USER,
    lk_models.ParticipantInfo.SIP: Role.USER,
    lk_models.ParticipantInfo.AGENT: Role.AGENT,
}
# Larger than any webhook LiveKit sends (a room or participant snapshot), far below gRPC's limit.
MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class Receipt:
    """What became of one webhook."""

    event_id: str
    event: str
    duplicate: bool


def _refused(reason: str, message: str) -> DomainError:
    return DomainError(ErrorKind.UNAUTHENTICATED, reason, message)


class WebhookIntake:
    """Verifies webhooks and records their call events.

    Args:
        api_key: The key the LiveKit server signs webhooks with (its `webhook.api_key`).
        api_secret: That key's secret.
        ledger: Where call events go.
    """

    def __init__(self, api_key: str, api_secret: str, ledger: CallLedger) -> None:
        self._receiver = lk_api.WebhookReceiver(lk_api.TokenVerifier(api_key, api_secret))
        self._ledger = ledger

    async def receive(self, body: bytes, authorization: str) -> Receipt:
        event = self.verify(body, authorization)
        call_event = to_call_event(event)
        if call_event is None:
            log.debug("webhook ignored", webhook=event.event, event_id=event.id)
            return Receipt(event.id, event.event, duplicate=False)
        new = await self._ledger.ingest(call_event)
        log.info(
            "webhook recorded" if new else "webhook repeated",
            webhook=event.event,
            event_id=event.id,
            conversation_id=call_event.conversation_id,
        )
        return Receipt(event.id, event.event, duplicate=not new)

    def verify(self, body: bytes, authorization: str) -> lk_webhook.WebhookEvent:
        """The event, if LiveKit signed exactly these bytes with our key and it has not expired."""
        token = authorization.strip()
        # LiveKit sends the bare JWT; accept a `Bearer` prefix from other senders.
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not token:
            raise _refused("WEBHOOK_SIGNATURE_MISSING", "the webhook has no Authorization header")
        if len(body) > MAX_BODY_BYTES:
            raise invalid_argument([FieldViolation("body", f"must be at most {MAX_BODY_BYTES} bytes")])
        try:
            # WebhookReceiver hashes `text.encode()`: a strict decode gives back exactly these bytes.
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _refused("WEBHOOK_BODY_MISMATCH", "the webhook body is not what was signed") from None
        try:
            event = self._receiver.receive(text, token)
        except jwt.ExpiredSignatureError:
            raise _refused("WEBHOOK_TOKEN_EXPIRED", "the webhook's signature has expired") from None
        except jwt.InvalidTokenError:
            # Bad signature, another key (issuer), malformed token, no expiry: all the same to a sender.
            raise _refused("WEBHOOK_SIGNATURE_INVALID", "the webhook's signature is not valid") from None
        except json_format.ParseError:
            # Signed by our key, so from our server, yet not a webhook event: a contract mismatch.
            raise invalid_argument([FieldViolation("body", "is not a LiveKit webhook event")]) from None
        except Exception:  # noqa: BLE001 - livekit-api raises bare Exception for a missing or wrong hash
            raise _refused("WEBHOOK_BODY_MISMATCH", "the webhook body is not what was signed") from None
        if not event.id or not event.event:
            raise invalid_argument([FieldViolation("body", "must carry the event's id and type")])
        return event


def to_call_event(event: lk_webhook.WebhookEvent) -> CallEvent | None:
    """The call event a webhook stands for, or None when it does not concern a call."""
    kind = _KINDS.get(event.event)
    conversation_id = ids.conversation_of_room(event.room.name)
    if kind is None or conversation_id is None:
        return None
    at_us = event.created_at * 1_000_000
    if kind is EventKind.ROOM_STARTED:
        return CallEvent(
            event.id, kind, conversation_id, event.room.sid, _room_created_us(event.room) or at_us
        )
    if kind is EventKind.ROOM_FINISHED:
        return CallEvent(event.id, kind, conversation_id, event.room.sid, at_us)
    participant = event.participant
    role = _ROLES.get(participant.kind)
    if role is None or not participant.sid:
        return None  # egress, ingress and the like are not people in the call
    return CallEvent(
        event_id=event.id,
        kind=kind,
        conversation_id=conversation_id,
        room_sid=event.room.sid,
        at_us=at_us,
        participant_sid=participant.sid,
        identity=participant.identity,
        role=role,
        joined_at_us=joined_at_us(participant),
    )


def joined_at_us(participant: lk_models.ParticipantInfo) -> int | None:
    if participant.joined_at_ms:
        return participant.joined_at_ms * 1000
    if participant.joined_at:
        return participant.joined_at * 1_000_000
    return None


def role_of(kind: int) -> Role | None:
    """USER or AGENT for a LiveKit participant kind; None for egress, ingress and the like."""
    return _ROLES.get(kind)


def _room_created_us(room: lk_models.Room) -> int | None:
    if room.creation_time_ms:
        return room.creation_time_ms * 1000
    if room.creation_time:
        return room.creation_time * 1_000_000
    return None
