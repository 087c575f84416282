"""A call never loses its agent: dispatch it again when a user is alone in the room.

LiveKit does not re-dispatch a job whose worker died (livekit/agents#1472): the user is left talking
to an empty room. When the newest session of a call that has not ended has a user in it and its
agent left (a `participant_left` webhook, or its absence found by reconciliation), the keeper
checks the server's own view, and if the room really has a user and no agent it creates a new
dispatch marked `resume`, so the new agent greets with "I'm back" and carries on with the history.

A session in which no agent has joined at all needs one too: the server drops a dispatch that
finds no worker registered, and after a graceful LiveKit restart the caller's SDK re-creates the
room (its token dispatches the agent once) while the worker is still registering again. Such a
session is given a grace period first, and is left alone while a dispatch a worker took is still
young, so the normal first dispatch is never doubled; the new dispatch is marked `resume` only if
an agent was in the call before (there is a conversation to go on with).

A dispatch only reaches an agent if a worker is registered at that moment; the server does not
keep it for a worker that registers later. So while the room still needs an agent the keeper
looks again every second: a dispatch no worker took within a few seconds is withdrawn and made
again, and one a worker took gets time for its agent to join before it is given up.

Runs in one agent_svc replica at a time (a second one could dispatch a second agent); the mesh
runs one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from agent_svc.call_ledger import CallLedger
from agent_svc.call_record import CallEvent, EventKind, Role
from agent_svc.call_store import StoredCall
from agent_svc.livekit_gateway import LiveKitGateway, RoomNotFoundError
from agent_svc.model import ParticipantKind
from servicekit import ids
from servicekit.errors import DomainError
from servicekit.times import US_PER_SECOND, now_us

log = structlog.get_logger("agent_svc.agent_keeper")

CHECK_INTERVAL_SECONDS = 1.0
# The agent may be reconnecting (a network blip): give it this long before replacing it.
SETTLE_SECONDS = 2.0
# A dispatch no worker took by then found no worker: withdraw it and try again.
UNCLAIMED_SECONDS = 2.0
# A dispatch a worker took gets this long for its agent to appear in the room.
ARRIVAL_SECONDS = 20.0
# A session with a user and no agent yet: the normal dispatch gets this long before another is made.
JOIN_GRACE_SECONDS = 10.0


@dataclass
class _Need:
    noticed_us: int
    # The room session it was noticed in: a new session (the room re-created) waits afresh.
    room_sid: str
    dispatch_id: str = ""
    dispatched_us: int = 0


class AgentKeeper:
    """Watches calls whose user is alone in the room and dispatches an agent.

    Args:
        ledger: The calls (and where the re-dispatch is recorded).
        gateway: The LiveKit server API.
        agent_name: The worker's registered agent name.
        join_grace_seconds: How long a session with a user and no agent yet waits for the
            normal dispatch before the keeper makes one.
        clock: UTC microseconds now.
    """

    def __init__(
        self,
        ledger: CallLedger,
        gateway: LiveKitGateway,
        agent_name: str,
        join_grace_seconds: float = JOIN_GRACE_SECONDS,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self._ledger = ledger
        self._gateway = gateway
        self._agent_name = agent_name
        self._join_grace_us = int(join_grace_seconds * US_PER_SECOND)
        self._clock = clock
        self._needs: dict[str, _Need] = {}
        self._wake = asyncio.Event()

    def notice(self, call: StoredCall) -> None:
        """Ledger listener: remembers calls whose user is without an agent."""
        record = call.record
        known = self._needs.get(call.conversation_id)
        if not record.needs_agent():
            # An agent came (or the call ended): a later need starts its waiting afresh.
            self._needs.pop(call.conversation_id, None)
        elif known is None or known.room_sid != record.room_sid:
            # A re-created room's own dispatch gets its grace too, whatever the old room waited.
            self._needs[call.conversation_id] = _Need(self._clock(), record.room_sid)
            self._wake.set()

    async def adopt_running(self) -> None:
        """At start-up: calls recorded before this process started may already need an agent."""
        for call in await self._ledger.store.running():
            self.notice(call)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.check_once()
            self._wake.clear()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waits, timeout=CHECK_INTERVAL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()

    async def check_once(self) -> None:
        """Looks once at every call noticed as needing an agent, dispatching where it is due."""
        for conversation_id in list(self._needs):
            try:
                await self._check(conversation_id)
            except RoomNotFoundError:
                self._needs.pop(conversation_id, None)  # the room finished meanwhile
            except DomainError as exc:
                log.warning(
                    "agent check failed; retrying", conversation_id=conversation_id, reason=exc.reason
                )
            except Exception as exc:  # noqa: BLE001 - one call's failure must not stop the keeper
                # No traceback: its locals may hold tokens; the type says where to look.
                log.error(
                    "agent check crashed", conversation_id=conversation_id, error_type=type(exc).__name__
                )

    async def _check(self, conversation_id: str) -> None:
        need = self._needs.get(conversation_id)
        if need is None:
            return
        stored = await self._ledger.store.load(conversation_id)
        if stored is None or not stored.record.needs_agent():
            self._needs.pop(conversation_id, None)
            return
        record = stored.record
        # No agent has come into this session yet (rather than one that left).
        first = not record.agent_left_its_user()
        now = self._clock()
        settle = self._join_grace_us if first else SETTLE_SECONDS * US_PER_SECOND
        if now - need.noticed_us < settle:
            return
        room = ids.room_name(conversation_id)
        try:
            present = await self._gateway.list_participants(room)
        except RoomNotFoundError:
            self._needs.pop(conversation_id, None)
            return
        kinds = {p.kind for p in present}
        if ParticipantKind.AGENT in kinds or ParticipantKind.USER not in kinds:
            return  # the server's view leads; the webhooks (or reconciliation) will catch up
        if not need.dispatch_id and first and await self._agent_on_its_way(room, now):
            return
        if need.dispatch_id:
            since = now - need.dispatched_us
            if since < UNCLAIMED_SECONDS * US_PER_SECOND:
                return
            claimed = any(
                d.dispatch_id == need.dispatch_id and d.jobs > 0
                for d in await self._gateway.list_dispatches(room)
            )
            if claimed and since < ARRIVAL_SECONDS * US_PER_SECOND:
                return
            await self._gateway.delete_dispatch(room, need.dispatch_id)
        retry = bool(need.dispatch_id)
        agent_id = stored.agent_id or await self._agent_of_room(room)
        # A new agent picks up the conversation only if an agent was in the call before.
        resume = not first or record.agent_join_us is not None
        created = await self._gateway.create_dispatch(
            room, self._agent_name, ids.dispatch_metadata(conversation_id, agent_id, resume=resume)
        )
        need.dispatch_id, need.dispatched_us = created.dispatch_id, now
        what = "no agent came to its user" if first else "agent left its user"
        log.warning(
            f"{what}; dispatched an agent",
            conversation_id=conversation_id,
            dispatch_id=created.dispatch_id,
            retry=retry,
        )
        # One count per agent lost (or session left without one), however many attempts it takes.
        lost = [p for p in record.participants if p.role is Role.AGENT and p.left_by_event]
        if first:
            key = f"{record.room_sid}:no-agent"
        else:
            key = lost[-1].participant_sid if lost else created.dispatch_id
        await self._ledger.ingest(
            CallEvent(
                f"redispatch:{key}",
                EventKind.AGENT_REDISPATCHED,
                conversation_id,
                record.room_sid,
                now,
            )
        )

    async def _agent_on_its_way(self, room: str, now: int) -> bool:
        """A worker took a recent dispatch of the room: its agent may still be joining."""
        young = now - ARRIVAL_SECONDS * US_PER_SECOND
        return any(
            d.agent_name == self._agent_name and d.jobs > 0 and d.created_us > young
            for d in await self._gateway.list_dispatches(room)
        )

    async def _agent_of_room(self, room: str) -> str:
        """The agent profile of the room's earlier dispatches (a call held before the mesh knew it)."""
        for dispatch in await self._gateway.list_dispatches(room):
            agent_id = ids.agent_of_dispatch(dispatch.metadata)
            if agent_id:
                return agent_id
        return ids.DEFAULT_AGENT_ID
