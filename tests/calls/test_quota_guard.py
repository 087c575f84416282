"""The quota guard on the real store: limits per deployment, minutes per month, 80 % warnings.

Calls are recorded through the ledger from synthetic events (as webhooks would bring them) with a
pinned clock, so months of minutes take no time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import structlog
from pymongo import AsyncMongoClient

from agent_svc.call_ledger import CallLedger
from agent_svc.call_record import CallEvent, EventKind, Role
from agent_svc.call_store import CallStore
from agent_svc.quota import AGENT_MINUTES, CONCURRENT, PARTICIPANT_MINUTES, QuotaGuard, QuotaLimits
from servicekit.auth import Principal
from servicekit.errors import DomainError, ErrorKind
from servicekit.times import US_PER_MINUTE, US_PER_SECOND, month_bounds
from tests.conftest import Store

pytestmark = pytest.mark.grpc

MAY = "2026-05"
START = month_bounds(MAY)[0] + 3600 * US_PER_SECOND
ALICE = Principal("alice", is_service=False)
SERVICE = Principal("chat", is_service=True)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def calls(store: Store, database_name: str) -> AsyncIterator[CallStore]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(store.uri, timeoutMS=5000)
    calls = CallStore(client[database_name])
    await calls.prepare()
    yield calls
    await client.close()


async def _call(ledger: CallLedger, cid: str, user: str, start: int, minutes: int, *, ended: bool) -> None:
    """A call with its user and the agent in it for `minutes`, ended or still running."""
    room = f"RM_{cid}"
    end = start + minutes * US_PER_MINUTE
    events = [
        CallEvent(f"{cid}-s", EventKind.ROOM_STARTED, cid, room, start),
        CallEvent(f"{cid}-u", EventKind.PARTICIPANT_JOINED, cid, room, start, f"PA_{cid}u", user, Role.USER),
        CallEvent(
            f"{cid}-a", EventKind.PARTICIPANT_JOINED, cid, room, start, f"PA_{cid}a", "agent", Role.AGENT
        ),
    ]
    if ended:
        events += [
            CallEvent(f"{cid}-ul", EventKind.PARTICIPANT_LEFT, cid, room, end, f"PA_{cid}u", user, Role.USER),
            CallEvent(
                f"{cid}-al", EventKind.PARTICIPANT_LEFT, cid, room, end, f"PA_{cid}a", "agent", Role.AGENT
            ),
            CallEvent(f"{cid}-f", EventKind.ROOM_FINISHED, cid, room, end),
        ]
    for event in events:
        await ledger.ingest(event)


async def test_minutes_are_metered_per_user_and_month_and_refused_past_the_limit(calls: CallStore) -> None:
    clock = Clock(START + 100 * US_PER_MINUTE)
    ledger = CallLedger(calls, sink=None, clock=clock)
    limits = QuotaLimits(
        concurrent_agent_sessions=0, agent_minutes_per_month=100, participant_minutes_per_month=500
    )
    guard = QuotaGuard(calls, limits, clock=clock)
    await _call(ledger, "c1", "alice", START, 30, ended=True)
    await _call(ledger, "c2", "bob", START + 40 * US_PER_MINUTE, 45, ended=True)

    alice = await guard.usage(ALICE, "", MAY)
    assert (alice.user_id, alice.agent_minutes, alice.participant_minutes) == ("alice", 30.0, 60.0)
    assert all(not q.near_limit for q in alice.quotas)
    assert not alice.show_used
    deployment = await guard.usage(SERVICE, "", MAY)
    assert (deployment.user_id, deployment.agent_minutes) == ("", 75.0)
    assert {q.quota_id: q.used for q in deployment.quotas} == {
        CONCURRENT: 0.0,
        AGENT_MINUTES: 75.0,
        PARTICIPANT_MINUTES: 150.0,
    }
    # A running call counts up to now: 20 minutes of its 100 so far passes 80 % of the agent limit.
    with structlog.testing.capture_logs() as logs:
        await _call(ledger, "c3", "alice", START + 80 * US_PER_MINUTE, 0, ended=False)
        states = {q.quota_id: q for q in (await guard.usage(SERVICE, "", MAY)).quotas}
        await guard.usage(SERVICE, "", MAY)
    assert states[AGENT_MINUTES].used == 95.0
    assert states[AGENT_MINUTES].near_limit
    assert not states[AGENT_MINUTES].exhausted
    assert not states[PARTICIPANT_MINUTES].near_limit
    warnings = [e for e in logs if e["event"] == "usage at 80 % of a monthly limit"]
    assert [(w["limit_name"], w["month"]) for w in warnings] == [(AGENT_MINUTES, MAY)]  # once
    # At the limit, a new call is refused, naming the limit; the running one is let through again.
    clock.now += 5 * US_PER_MINUTE
    with pytest.raises(DomainError) as refused:
        await guard.admit("c4", "bob", "default")
    assert refused.value.kind is ErrorKind.RESOURCE_EXHAUSTED
    assert [v.quota_id for v in refused.value.quota_violations] == [AGENT_MINUTES]
    assert refused.value.quota_violations[0].subject == "deployment"
    await guard.admit("c3", "alice", "default")
    # Another month starts empty.
    june = await guard.usage(SERVICE, "", "2026-06")
    assert june.agent_minutes == 0.0


async def test_concurrent_sessions_count_running_and_admitted_calls(calls: CallStore) -> None:
    clock = Clock(START)
    ledger = CallLedger(calls, sink=None, clock=clock)
    guard = QuotaGuard(calls, QuotaLimits(concurrent_agent_sessions=2, hold_seconds=60), clock=clock)
    await _call(ledger, "r1", "alice", START, 0, ended=False)
    await guard.admit("h1", "bob", "default")  # admitted, room not started: holds a session
    with pytest.raises(DomainError) as refused:
        await guard.admit("h2", "carol", "default")
    assert [v.quota_id for v in refused.value.quota_violations] == [CONCURRENT]
    await guard.admit("h1", "bob", "default")  # the same call again is not a new session
    clock.now += 61 * US_PER_SECOND  # bob never joined: the hold lapses
    await guard.admit("h2", "carol", "default")


async def test_usage_of_someone_else_is_for_services_only(calls: CallStore) -> None:
    guard = QuotaGuard(calls, QuotaLimits())
    with pytest.raises(DomainError) as denied:
        await guard.usage(ALICE, "bob", "")
    assert denied.value.kind is ErrorKind.PERMISSION_DENIED
    with pytest.raises(DomainError) as bad:
        await guard.usage(ALICE, "", "2026-13")
    assert [v.field for v in bad.value.violations] == ["month"]
    assert (await guard.usage(SERVICE, "bob", "")).user_id == "bob"


async def test_a_hold_ends_when_its_call_has_come_and_gone(calls: CallStore) -> None:
    clock = Clock(START)
    ledger = CallLedger(calls, sink=None, clock=clock)
    guard = QuotaGuard(calls, QuotaLimits(concurrent_agent_sessions=1, hold_seconds=120), clock=clock)
    await guard.admit("short", "alice", "default")
    await _call(ledger, "short", "alice", START + US_PER_SECOND, 0, ended=False)
    clock.now += 30 * US_PER_SECOND
    await guard.admit("short", "alice", "default")  # a new token mid-call: no new hold
    await _call(ledger, "short", "alice", START + US_PER_SECOND, 1, ended=True)
    clock.now += 40 * US_PER_SECOND  # well inside the first hold's 120 s, after the call ended
    await guard.admit("next", "bob", "default")


async def test_a_call_across_a_month_end_counts_in_both_months_and_older_documents_are_found(
    calls: CallStore, store: Store, database_name: str
) -> None:
    """`for_month` finds calls through their month span (an indexed range), not the `months`
    array; calls stored before the span existed get it when the store is prepared again."""
    june_start = month_bounds("2026-06")[0]
    clock = Clock(june_start + 60 * US_PER_MINUTE)
    ledger = CallLedger(calls, sink=None, clock=clock)
    guard = QuotaGuard(calls, QuotaLimits(concurrent_agent_sessions=0), clock=clock)
    await _call(ledger, "edge", "alice", june_start - 10 * US_PER_MINUTE, 30, ended=True)
    await _call(ledger, "may-only", "bob", START, 5, ended=True)
    may = await guard.usage(SERVICE, "", MAY)
    june = await guard.usage(SERVICE, "", "2026-06")
    assert (may.agent_minutes, june.agent_minutes) == (15.0, 20.0)

    # A document as an older version wrote it: no month span.
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(store.uri, timeoutMS=5000)
    try:
        raw = client[database_name]["calls"]
        await raw.update_many({}, {"$unset": {"month_first": "", "month_last": ""}})
        assert (await guard.usage(SERVICE, "", "2026-06")).agent_minutes == 0.0
        await calls.prepare()
    finally:
        await client.close()
    assert (await guard.usage(SERVICE, "", "2026-06")).agent_minutes == 20.0
    assert (await guard.usage(ALICE, "", MAY)).agent_minutes == 10.0
