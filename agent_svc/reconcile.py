"""Reconciliation: the calls as the LiveKit server has them now, against the calls as recorded.

Webhooks get lost (a restart of agent_svc, a full queue on the server, livekit#2399), so the live
counts would drift if events were the only source. At start-up and then periodically this lists
the server's rooms and their participants and records what the events missed, as events of its
own with ids derived from what they describe (finding the same thing twice records it once):

- a room of a conversation the records do not have: `room_started` (at the room's creation time);
- a participant the records do not have: `participant_joined` (at its join time);
- a participant the records have in the room who is not there any more: `participant_left` (now);
- a session the records have open whose room is gone, or was replaced: `room_lost` (now).

The real webhook arriving later is simply one more event; the fold keeps the earliest times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from agent_svc.call_ledger import CallLedger
from agent_svc.call_record import CallEvent, CallRecord, EventKind, Role
from agent_svc.livekit_gateway import LiveKitGateway, RoomInfo, RoomNotFoundError
from agent_svc.model import ParticipantKind, ParticipantView
from agent_svc.quota import QuotaGuard
from servicekit import ids
from servicekit.errors import DomainError
from servicekit.times import US_PER_SECOND, now_us

log = structlog.get_logger("agent_svc.reconcile")


class Reconciler:
    """Compares the LiveKit server's rooms with the recorded calls and records the difference.

    Args:
        ledger: Where the findings go.
        gateway: The LiveKit server API.
        guard: Checked for the monthly 80 % warnings on every round.
        clock: UTC microseconds now.
    """

    def __init__(
        self,
        ledger: CallLedger,
        gateway: LiveKitGateway,
        guard: QuotaGuard,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self._ledger = ledger
        self._gateway = gateway
        self._guard = guard
        self._clock = clock

    async def reconcile_once(self) -> int:
        """One comparison; returns how many findings were new."""
        rooms: dict[str, RoomInfo] = {}
        for listed in await self._gateway.list_rooms():
            conversation_id = ids.conversation_of_room(listed.name)
            if conversation_id is not None:
                rooms[conversation_id] = listed
        running = {call.conversation_id: call for call in await self._ledger.store.running()}
        added = 0
        for conversation_id in sorted(set(rooms) | set(running)):
            call = running.get(conversation_id) or await self._ledger.store.load(conversation_id)
            record = call.record if call is not None else CallRecord(conversation_id)
            room: RoomInfo | None = rooms.get(conversation_id)
            participants: list[ParticipantView] = []
            if room is not None:
                try:
                    participants = await self._gateway.list_participants(room.name)
                except RoomNotFoundError:
                    room = None  # it finished between the two calls
            for event in findings(record, room, participants, self._clock()):
                added += await self._ledger.ingest(event)
        await self._guard.check_warnings()
        if added:
            log.info("reconciliation recorded what webhooks missed", findings=added)
        return added

    async def run(self, interval_seconds: float, stop: asyncio.Event) -> None:
        """Reconciles now and then every `interval_seconds` until `stop` is set."""
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except DomainError as exc:
                log.warning("reconciliation failed; trying again later", reason=exc.reason)
            except Exception as exc:  # noqa: BLE001 - the next round may succeed; the loop must live
                # No traceback: its locals may hold tokens; the type says where to look.
                log.error("reconciliation crashed; trying again later", error_type=type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), interval_seconds)
            except TimeoutError:
                continue


def findings(
    record: CallRecord, room: RoomInfo | None, participants: list[ParticipantView], now: int
) -> list[CallEvent]:
    """The events that would bring `record` in line with the server's `room` and `participants`."""
    cid = record.conversation_id
    found: list[CallEvent] = []
    for session in record.sessions:
        if session.end_us is None and (room is None or room.sid != session.room_sid):
            found.append(
                CallEvent(
                    f"reconcile:{session.room_sid}:lost", EventKind.ROOM_LOST, cid, session.room_sid, now
                )
            )
    if room is None:
        return found
    if room.sid not in {s.room_sid for s in record.sessions}:
        found.append(
            CallEvent(
                f"reconcile:{room.sid}:started", EventKind.ROOM_STARTED, cid, room.sid, room.created_us or now
            )
        )
    recorded = {p.participant_sid for p in record.participants}
    listed = set()
    for participant in participants:
        if not participant.sid:
            continue
        listed.add(participant.sid)
        if participant.sid in recorded:
            continue
        joined = (
            int(participant.join_time.timestamp() * US_PER_SECOND)
            if participant.join_time is not None
            else now
        )
        found.append(
            CallEvent(
                event_id=f"reconcile:{participant.sid}:joined",
                kind=EventKind.PARTICIPANT_JOINED,
                conversation_id=cid,
                room_sid=room.sid,
                at_us=joined,
                participant_sid=participant.sid,
                identity=participant.identity,
                role=Role.AGENT if participant.kind is ParticipantKind.AGENT else Role.USER,
                joined_at_us=joined,
            )
        )
    for presence in record.participants:
        if (
            presence.leave_us is None
            and presence.room_sid == room.sid
            and presence.participant_sid not in listed
        ):
            found.append(
                CallEvent(
                    event_id=f"reconcile:{presence.participant_sid}:left",
                    kind=EventKind.PARTICIPANT_LEFT,
                    conversation_id=cid,
                    room_sid=room.sid,
                    at_us=max(now, presence.join_us),
                    participant_sid=presence.participant_sid,
                    identity=presence.identity,
                    role=presence.role,
                )
            )
    return found
