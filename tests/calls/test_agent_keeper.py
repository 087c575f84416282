"""The agent keeper's rules, on the real store with a pinned clock and a stand-in LiveKit API.

The case here is a session in which no agent ever joined: after a graceful LiveKit restart the
caller re-creates the room and its token's dispatch finds no worker yet (the server drops it). The
keeper must dispatch the agent again, but only after a grace period, never while the server has an
agent in the room or a worker took a young dispatch, and count it once however often it retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from agent_svc.agent_keeper import ARRIVAL_SECONDS, UNCLAIMED_SECONDS, AgentKeeper
from agent_svc.call_ledger import CallLedger
from agent_svc.call_record import CallEvent, EventKind, Role
from agent_svc.call_store import CallStore
from agent_svc.livekit_gateway import DispatchInfo, LiveKitGateway
from agent_svc.model import ParticipantKind, ParticipantState, ParticipantView
from servicekit import ids
from servicekit.times import US_PER_SECOND, month_bounds
from tests.conftest import Store

pytestmark = pytest.mark.grpc

CID = "conv-1"
ROOM = ids.room_name(CID)
AGENT_NAME = "syntera-voice"
S = US_PER_SECOND
T0 = month_bounds("2026-05")[0] + 3600 * S
GRACE_SECONDS = 10.0


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


class FakeLiveKit(LiveKitGateway):
    """The server's participants and dispatches of one room, as the test sets them."""

    def __init__(self) -> None:  # no server: nothing of the base is used
        self.kinds: list[ParticipantKind] = [ParticipantKind.USER]
        self.dispatches: dict[str, DispatchInfo] = {}
        self.created: list[DispatchInfo] = []
        self.deleted: list[str] = []

    async def list_participants(self, name: str) -> list[ParticipantView]:
        assert name == ROOM
        return [
            ParticipantView(f"p{i}", "", kind, ParticipantState.ACTIVE, None, (), f"PA_{i}")
            for i, kind in enumerate(self.kinds)
        ]

    async def list_dispatches(self, room: str) -> list[DispatchInfo]:
        return list(self.dispatches.values())

    async def delete_dispatch(self, room: str, dispatch_id: str) -> None:
        self.deleted.append(dispatch_id)
        self.dispatches.pop(dispatch_id, None)

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> DispatchInfo:
        made = DispatchInfo(f"AD_{len(self.created)}", agent_name, metadata)
        self.created.append(made)
        self.dispatches[made.dispatch_id] = made
        return made


@pytest.fixture
async def calls(store: Store, database_name: str) -> AsyncIterator[CallStore]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(store.uri, timeoutMS=5000)
    calls = CallStore(client[database_name])
    await calls.prepare()
    yield calls
    await client.close()


def _joined(psid: str, role: Role, room_sid: str, at: int) -> CallEvent:
    identity = "alice" if role is Role.USER else "agent-default"
    return CallEvent(f"{psid}-joined", EventKind.PARTICIPANT_JOINED, CID, room_sid, at, psid, identity, role)


async def _keeper(calls: CallStore, clock: Clock, gateway: FakeLiveKit) -> tuple[CallLedger, AgentKeeper]:
    ledger = CallLedger(calls, sink=None, clock=clock)
    keeper = AgentKeeper(ledger, gateway, AGENT_NAME, join_grace_seconds=GRACE_SECONDS, clock=clock)
    ledger.on_change(keeper.notice)
    return ledger, keeper


async def _restarted_call(ledger: CallLedger) -> None:
    """User and agent in a first room that the restart took away; the user alone in the second."""
    await ledger.ingest(CallEvent("s1", EventKind.ROOM_STARTED, CID, "RM_1", T0))
    await ledger.ingest(_joined("PA_u1", Role.USER, "RM_1", T0))
    await ledger.ingest(_joined("PA_a1", Role.AGENT, "RM_1", T0 + S))
    await ledger.ingest(CallEvent("f1", EventKind.ROOM_FINISHED, CID, "RM_1", T0 + 30 * S))
    await ledger.ingest(CallEvent("s2", EventKind.ROOM_STARTED, CID, "RM_2", T0 + 32 * S))
    await ledger.ingest(_joined("PA_u2", Role.USER, "RM_2", T0 + 32 * S))


async def test_a_session_left_without_an_agent_gets_one_after_the_grace(calls: CallStore) -> None:
    clock, gateway = Clock(T0 + 32 * S), FakeLiveKit()
    # The token's dispatch found no worker: the server keeps it, with no job.
    gateway.dispatches["AD_token"] = DispatchInfo("AD_token", AGENT_NAME, "", jobs=0, created_us=clock.now)
    ledger, keeper = await _keeper(calls, clock, gateway)
    await _restarted_call(ledger)

    clock.advance(GRACE_SECONDS / 2)
    await keeper.check_once()
    assert gateway.created == []  # the normal dispatch still has its time

    clock.advance(GRACE_SECONDS)
    await keeper.check_once()
    (made,) = gateway.created
    dispatch = ids.read_dispatch(made.metadata)
    # An agent was in the call before: the new one carries the conversation on.
    assert (dispatch.conversation_id, dispatch.resume) == (CID, True)

    # No worker took it: withdrawn and made again, counted once.
    clock.advance(UNCLAIMED_SECONDS + 1)
    await keeper.check_once()
    assert gateway.deleted == ["AD_0"]
    assert [d.dispatch_id for d in gateway.created] == ["AD_0", "AD_1"]
    stored = await calls.load(CID)
    assert stored is not None
    assert stored.record.redispatches == 1

    # The agent arrives: nothing more is dispatched, however long the keeper looks.
    await ledger.ingest(_joined("PA_a2", Role.AGENT, "RM_2", clock.now))
    gateway.kinds = [ParticipantKind.USER, ParticipantKind.AGENT]
    for _ in range(3):
        clock.advance(ARRIVAL_SECONDS)
        await keeper.check_once()
    assert len(gateway.created) == 2


async def test_a_dispatch_a_worker_took_is_not_doubled(calls: CallStore) -> None:
    clock, gateway = Clock(T0), FakeLiveKit()
    ledger, keeper = await _keeper(calls, clock, gateway)
    await ledger.ingest(CallEvent("s1", EventKind.ROOM_STARTED, CID, "RM_1", T0))
    await ledger.ingest(_joined("PA_u1", Role.USER, "RM_1", T0))
    # A slow first join: a worker has the token's dispatch, its agent is not in the room yet.
    gateway.dispatches["AD_token"] = DispatchInfo("AD_token", AGENT_NAME, "", jobs=1, created_us=T0)

    clock.advance(GRACE_SECONDS + 1)
    await keeper.check_once()
    assert gateway.created == []

    # Still no agent long after the worker took it: the job failed somewhere, dispatch one.
    clock.advance(ARRIVAL_SECONDS)
    await keeper.check_once()
    (made,) = gateway.created
    # No agent was ever in this call: a first greeting, not "I'm back".
    assert not ids.read_dispatch(made.metadata).resume


async def test_no_dispatch_while_the_server_has_an_agent_in_the_room(calls: CallStore) -> None:
    clock, gateway = Clock(T0 + 32 * S), FakeLiveKit()
    ledger, keeper = await _keeper(calls, clock, gateway)
    await _restarted_call(ledger)
    # The old agent reconnected to the new room; its webhook has not arrived yet.
    gateway.kinds = [ParticipantKind.USER, ParticipantKind.AGENT]
    clock.advance(GRACE_SECONDS + 1)
    await keeper.check_once()
    assert gateway.created == []


async def test_a_re_created_room_gets_its_own_grace(calls: CallStore) -> None:
    clock, gateway = Clock(T0 + 32 * S), FakeLiveKit()
    ledger, keeper = await _keeper(calls, clock, gateway)
    await _restarted_call(ledger)
    clock.advance(GRACE_SECONDS - 1)
    await keeper.check_once()
    # The caller's room is re-created once more: its token dispatch may be under way right now.
    await ledger.ingest(CallEvent("f2", EventKind.ROOM_FINISHED, CID, "RM_2", clock.now))
    await ledger.ingest(_joined("PA_u3", Role.USER, "RM_3", clock.now + S))
    clock.advance(GRACE_SECONDS - 1)
    await keeper.check_once()
    assert gateway.created == []
    clock.advance(2)
    await keeper.check_once()
    assert len(gateway.created) == 1
