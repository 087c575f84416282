"""A call as a pure function of its events: what the LiveKit server reported, in any order.

Webhooks repeat and arrive out of order, and some never arrive (livekit#2399). So nothing here
updates a record step by step: every event of a conversation is kept (once, by id), and the record
is folded from all of them each time. The fold uses only order-free rules (earliest join, earliest
leave, earliest end), so the same set of events gives the same record whatever order it came in.

A conversation's room may live more than once (a LiveKit restart drops every room; the clients
rejoin a new one with a new sid). Each room incarnation is a session; the call spans them all and
ends when its newest session ends.

Times are UTC microseconds (servicekit.times).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from servicekit.times import month_bounds, months_between


class EventKind(enum.StrEnum):
    """What happened. The first four come from LiveKit; the others are the mesh's own findings."""

    ROOM_STARTED = "room_started"
    ROOM_FINISHED = "room_finished"
    PARTICIPANT_JOINED = "participant_joined"
    PARTICIPANT_LEFT = "participant_left"
    # The conversation was ended (hung up) and agent_svc deleted the room.
    ROOM_DELETED = "room_deleted"
    # Reconciliation found the session's room gone from the server with no room_finished.
    ROOM_LOST = "room_lost"
    # The agent was dispatched again after leaving its user alone in the room.
    AGENT_REDISPATCHED = "agent_redispatched"


_ENDS = (EventKind.ROOM_FINISHED, EventKind.ROOM_DELETED, EventKind.ROOM_LOST)


class Role(enum.StrEnum):
    """Who a participant is, as far as calls and usage are concerned."""

    USER = "user"
    AGENT = "agent"


class CallState(enum.StrEnum):
    WAITING = "waiting"
    ACTIVE = "active"
    ENDED = "ended"


class EndReason(enum.StrEnum):
    USER_LEFT = "user_left"
    NO_SHOW = "no_show"
    HUNG_UP = "hung_up"
    ROOM_LOST = "room_lost"


@dataclass(frozen=True)
class CallEvent:
    """One event about a conversation's room.

    Attributes:
        event_id: Unique per event: LiveKit's id, or a deterministic id for the mesh's own events so
            that finding the same thing twice records it once.
        kind: What happened.
        conversation_id: Whose call.
        room_sid: The room incarnation (empty when unknown: then it applies to the newest one).
        at_us: When it happened (LiveKit's event time, whole seconds).
        participant_sid: For participant events, the connection's id.
        identity: For participant events, the participant's identity.
        role: For participant events, USER or AGENT.
        joined_at_us: For participant events, when the participant joined (millisecond precision).
    """

    event_id: str
    kind: EventKind
    conversation_id: str
    room_sid: str
    at_us: int
    participant_sid: str = ""
    identity: str = ""
    role: Role | None = None
    joined_at_us: int | None = None


@dataclass(frozen=True)
class Presence:
    """One connection of a participant to the room; `leave_us` is None while connected."""

    participant_sid: str
    identity: str
    role: Role
    room_sid: str
    join_us: int
    leave_us: int | None
    left_by_event: bool = False

    def end_or(self, now_us: int) -> int:
        return self.leave_us if self.leave_us is not None else now_us


@dataclass(frozen=True)
class Session:
    """One incarnation of the room."""

    room_sid: str
    start_us: int
    end_us: int | None
    end_kind: EventKind | None


@dataclass(frozen=True)
class Usage:
    """Time spent in calls, in microseconds."""

    agent_us: int = 0
    participant_us: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.agent_us + other.agent_us, self.participant_us + other.participant_us)


@dataclass(frozen=True)
class CallRecord:
    """The call of one conversation, folded from its events."""

    conversation_id: str
    sessions: tuple[Session, ...] = ()
    participants: tuple[Presence, ...] = ()
    redispatches: int = 0
    hung_up: bool = False
    user_ever_joined: bool = False

    @property
    def current(self) -> Session | None:
        return self.sessions[-1] if self.sessions else None

    @property
    def room_sid(self) -> str:
        return self.current.room_sid if self.current else ""

    @property
    def started(self) -> bool:
        return bool(self.sessions)

    @property
    def ended(self) -> bool:
        return self.current is not None and self.current.end_us is not None

    @property
    def start_us(self) -> int | None:
        return self.sessions[0].start_us if self.sessions else None

    @property
    def end_us(self) -> int | None:
        return self.current.end_us if self.current else None

    @property
    def state(self) -> CallState:
        if self.ended:
            return CallState.ENDED
        return CallState.ACTIVE if self.present(Role.USER) else CallState.WAITING

    @property
    def end_reason(self) -> EndReason | None:
        current = self.current
        if current is None or current.end_us is None:
            return None
        if self.hung_up:
            return EndReason.HUNG_UP
        if current.end_kind is EventKind.ROOM_LOST:
            return EndReason.ROOM_LOST
        return EndReason.USER_LEFT if self.user_ever_joined else EndReason.NO_SHOW

    @property
    def agent_join_us(self) -> int | None:
        joins = [p.join_us for p in self.participants if p.role is Role.AGENT]
        return min(joins) if joins else None

    def present(self, role: Role) -> list[Presence]:
        """Connections of `role` still open in the newest session."""
        sid = self.room_sid
        return [p for p in self.participants if p.role is role and p.leave_us is None and p.room_sid == sid]

    def agent_left_its_user(self) -> bool:
        """In the newest session an agent left by itself (an event said so), none is back, and a
        user is still there: the situation LiveKit does not repair (livekit/agents#1472)."""
        if self.ended or self.hung_up or not self.present(Role.USER) or self.present(Role.AGENT):
            return False
        sid = self.room_sid
        return any(p.role is Role.AGENT and p.room_sid == sid and p.left_by_event for p in self.participants)

    def user_waits_for_agent(self) -> bool:
        """In the newest session a user is there and no agent has joined it at all.

        Normally the agent is on its way (the token's dispatch). But the server drops a dispatch
        that finds no worker registered, and a graceful LiveKit restart re-creates the room while
        the worker is still registering again: then nobody comes unless the mesh dispatches again.
        Whoever acts on this must first give the normal dispatch its time.
        """
        if self.ended or self.hung_up or not self.present(Role.USER):
            return False
        sid = self.room_sid
        return not any(p.role is Role.AGENT and p.room_sid == sid for p in self.participants)

    def needs_agent(self) -> bool:
        """The newest session has a user and no agent: it left, or none has come yet."""
        return self.agent_left_its_user() or self.user_waits_for_agent()

    def usage(self, now_us: int, month: str | None = None) -> Usage:
        """Time in this call, optionally only the part inside `month`; open connections count to now."""
        low, high = month_bounds(month) if month else (0, 2**62)
        total = Usage()
        for p in self.participants:
            start, end = max(p.join_us, low), min(p.end_or(now_us), high)
            if end > start:
                spent = end - start
                total += Usage(spent if p.role is Role.AGENT else 0, spent)
        return total

    def months(self, now_us: int) -> list[str]:
        """Every month some connection of this call overlaps (open ones up to now)."""
        found: set[str] = set()
        for p in self.participants:
            found.update(months_between(p.join_us, max(p.join_us, p.end_or(now_us))))
        return sorted(found)


def fold(conversation_id: str, events: Iterable[CallEvent]) -> CallRecord:
    """The call as the events describe it; independent of their order and of repeats."""
    ordered = sorted(events, key=lambda e: (e.at_us, e.event_id))
    sessions = _sessions(ordered)
    if not sessions:
        return CallRecord(conversation_id)
    newest_sid = sessions[-1].room_sid
    ends = {s.room_sid: s.end_us for s in sessions}
    presences: dict[str, _PresenceBuilder] = {}
    redispatches: set[str] = set()
    hung_up = False
    for event in ordered:
        if event.kind is EventKind.AGENT_REDISPATCHED:
            redispatches.add(event.event_id)
        elif event.kind is EventKind.ROOM_DELETED:
            hung_up = True
        elif event.kind in (EventKind.PARTICIPANT_JOINED, EventKind.PARTICIPANT_LEFT) and event.role:
            builder = presences.setdefault(
                event.participant_sid,
                _PresenceBuilder(event.identity, event.role, event.room_sid or newest_sid),
            )
            builder.add(event)
    participants = []
    for sid, builder in presences.items():
        session_end = ends.get(builder.room_sid)
        participants.append(builder.build(sid, session_end))
    participants.sort(key=lambda p: (p.join_us, p.participant_sid))
    return CallRecord(
        conversation_id=conversation_id,
        sessions=tuple(sessions),
        participants=tuple(participants),
        redispatches=len(redispatches),
        hung_up=hung_up,
        user_ever_joined=any(p.role is Role.USER for p in participants),
    )


def _sessions(ordered: list[CallEvent]) -> list[Session]:
    starts: dict[str, int] = {}
    ends: dict[str, tuple[int, EventKind]] = {}
    for event in ordered:
        if not event.room_sid:
            continue
        # Any event of a room proves the room existed by then (room_started may be the lost one).
        starts[event.room_sid] = min(starts.get(event.room_sid, event.at_us), _earliest(event))
        if event.kind in _ENDS:
            known = ends.get(event.room_sid)
            if known is None or _end_rank(event) < _end_rank_of(known):
                ends[event.room_sid] = (event.at_us, event.kind)
    # Events without a sid (a deletion when the room was already gone) end the newest session.
    newest = max(starts, key=lambda sid: (starts[sid], sid), default=None)
    for event in ordered:
        if not event.room_sid and event.kind in _ENDS and newest is not None and newest not in ends:
            ends[newest] = (max(event.at_us, starts[newest]), event.kind)
    sessions = []
    for sid, start in sorted(starts.items(), key=lambda item: (item[1], item[0])):
        end = ends.get(sid)
        sessions.append(Session(sid, start, max(end[0], start) if end else None, end[1] if end else None))
    return sessions


def _end_rank(event: CallEvent) -> tuple[int, int]:
    return _end_rank_of((event.at_us, event.kind))


def _end_rank_of(end: tuple[int, EventKind]) -> tuple[int, int]:
    """What the server said beats what reconciliation inferred (the server may drop the room from its
    list a moment before it stamps room_finished); among equals, the earliest."""
    return (1 if end[1] is EventKind.ROOM_LOST else 0, end[0])


def _earliest(event: CallEvent) -> int:
    if event.joined_at_us is not None:
        return min(event.at_us, event.joined_at_us)
    return event.at_us


@dataclass
class _PresenceBuilder:
    identity: str
    role: Role
    room_sid: str
    join_us: int | None = None
    leave_us: int | None = None

    def add(self, event: CallEvent) -> None:
        joined = event.joined_at_us if event.joined_at_us is not None else event.at_us
        if event.kind is EventKind.PARTICIPANT_JOINED or event.joined_at_us is not None:
            self.join_us = joined if self.join_us is None else min(self.join_us, joined)
        if event.kind is EventKind.PARTICIPANT_LEFT:
            self.leave_us = event.at_us if self.leave_us is None else min(self.leave_us, event.at_us)

    def build(self, participant_sid: str, session_end: int | None) -> Presence:
        join = self.join_us if self.join_us is not None else (self.leave_us or 0)
        left_by_event = self.leave_us is not None
        leave = self.leave_us
        if session_end is not None and (leave is None or leave > session_end):
            leave = session_end
        if leave is not None:
            leave = max(leave, join)
        return Presence(participant_sid, self.identity, self.role, self.room_sid, join, leave, left_by_event)
