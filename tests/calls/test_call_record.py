"""The call fold: the same events in any order, repeated or not, give the same call."""

from __future__ import annotations

import itertools
import random

import pytest

from agent_svc.call_record import CallEvent, CallState, EndReason, EventKind, Role, fold
from servicekit.times import US_PER_MINUTE, US_PER_SECOND, month_bounds

pytestmark = pytest.mark.unit

CID = "c1"
S = US_PER_SECOND
T0 = month_bounds("2026-05")[0] + 10 * S


def _room(kind: EventKind, at: int, sid: str = "RM_1", event_id: str | None = None) -> CallEvent:
    return CallEvent(event_id or f"{kind}-{sid}-{at}", kind, CID, sid, at)


def _person(
    kind: EventKind, psid: str, role: Role, at: int, joined: int | None = None, sid: str = "RM_1"
) -> CallEvent:
    identity = "alice" if role is Role.USER else f"agent-{psid}"
    return CallEvent(f"{kind}-{psid}", kind, CID, sid, at, psid, identity, role, joined)


def _a_call() -> list[CallEvent]:
    return [
        _room(EventKind.ROOM_STARTED, T0),
        _person(EventKind.PARTICIPANT_JOINED, "PA_u", Role.USER, T0 + S, T0 + S + 250),
        _person(EventKind.PARTICIPANT_JOINED, "PA_a", Role.AGENT, T0 + 2 * S, T0 + 2 * S),
        _person(EventKind.PARTICIPANT_LEFT, "PA_u", Role.USER, T0 + 60 * S, T0 + S + 250),
        _person(EventKind.PARTICIPANT_LEFT, "PA_a", Role.AGENT, T0 + 61 * S, T0 + 2 * S),
        _room(EventKind.ROOM_FINISHED, T0 + 81 * S),
    ]


def test_a_whole_call() -> None:
    record = fold(CID, _a_call())
    assert record.state is CallState.ENDED
    assert record.end_reason is EndReason.USER_LEFT
    assert (record.start_us, record.end_us) == (T0, T0 + 81 * S)
    assert record.agent_join_us == T0 + 2 * S
    user, agent = record.participants
    assert (user.identity, user.join_us, user.leave_us) == ("alice", T0 + S + 250, T0 + 60 * S)
    assert (agent.role, agent.leave_us) == (Role.AGENT, T0 + 61 * S)
    usage = record.usage(now_us=T0 + 1000 * S)
    assert usage.agent_us == 59 * S
    assert usage.participant_us == 59 * S + (59 * S - 250)


def test_order_and_repeats_do_not_matter() -> None:
    events = _a_call()
    expected = fold(CID, events)
    rng = random.Random(7)  # noqa: S311 - shuffling test input, not secrets
    for _ in range(50):
        shuffled = events + rng.sample(events, 3)
        rng.shuffle(shuffled)
        assert fold(CID, shuffled) == expected


@pytest.mark.parametrize("cut", range(1, 6))
def test_states_along_the_way(cut: int) -> None:
    record = fold(CID, _a_call()[:cut])
    expected = [CallState.WAITING, CallState.ACTIVE, CallState.ACTIVE, CallState.WAITING, CallState.WAITING]
    assert record.state is expected[cut - 1]
    assert record.end_us is None


def test_a_lost_room_started_is_inferred_from_the_first_join() -> None:
    record = fold(CID, _a_call()[1:])
    assert record.start_us == T0 + S
    assert record.state is CallState.ENDED


def test_nobody_came() -> None:
    events = [_room(EventKind.ROOM_STARTED, T0), _room(EventKind.ROOM_FINISHED, T0 + 300 * S)]
    assert fold(CID, events).end_reason is EndReason.NO_SHOW


def test_hung_up_wins_over_room_finished_and_closes_everyone() -> None:
    events = [
        *_a_call()[:3],
        _room(EventKind.ROOM_DELETED, T0 + 30 * S),
        _room(EventKind.ROOM_FINISHED, T0 + 31 * S),
    ]
    record = fold(CID, events)
    assert record.end_reason is EndReason.HUNG_UP
    assert record.end_us == T0 + 30 * S
    assert all(p.leave_us == T0 + 30 * S for p in record.participants)


def test_a_lost_room_is_replaced_by_its_next_incarnation() -> None:
    events = [
        *_a_call()[:3],
        _room(EventKind.ROOM_LOST, T0 + 40 * S),
        _room(EventKind.ROOM_STARTED, T0 + 42 * S, sid="RM_2"),
        _person(EventKind.PARTICIPANT_JOINED, "PA_u2", Role.USER, T0 + 42 * S, sid="RM_2"),
    ]
    record = fold(CID, events)
    assert record.state is CallState.ACTIVE
    assert record.start_us == T0
    assert record.room_sid == "RM_2"
    # Everyone of the lost room left when it was found lost.
    assert [p.leave_us for p in record.participants] == [T0 + 40 * S, T0 + 40 * S, None]
    assert not record.agent_left_its_user()  # nobody left: the room went away under them


def test_a_late_room_finished_beats_the_reconciled_loss() -> None:
    events = [*_a_call(), _room(EventKind.ROOM_LOST, T0 + 90 * S)]
    record = fold(CID, events)
    assert record.end_us == T0 + 81 * S
    assert record.end_reason is EndReason.USER_LEFT


def test_agent_that_left_its_user_until_another_joins() -> None:
    events = _a_call()[:3] + [_person(EventKind.PARTICIPANT_LEFT, "PA_a", Role.AGENT, T0 + 20 * S)]
    assert fold(CID, events).agent_left_its_user()
    back = events + [_person(EventKind.PARTICIPANT_JOINED, "PA_b", Role.AGENT, T0 + 25 * S)]
    assert not fold(CID, back).agent_left_its_user()
    redispatched = events + [_room(EventKind.AGENT_REDISPATCHED, T0 + 22 * S, event_id="redispatch:PA_a")]
    assert fold(CID, redispatched * 2).redispatches == 1


def test_usage_is_split_at_month_boundaries() -> None:
    may_end = month_bounds("2026-05")[1]
    events = [
        _room(EventKind.ROOM_STARTED, may_end - 10 * US_PER_MINUTE),
        _person(EventKind.PARTICIPANT_JOINED, "PA_a", Role.AGENT, may_end - 10 * US_PER_MINUTE),
    ]
    record = fold(CID, events)
    now = may_end + 5 * US_PER_MINUTE
    assert record.usage(now, "2026-05").agent_us == 10 * US_PER_MINUTE
    assert record.usage(now, "2026-06").agent_us == 5 * US_PER_MINUTE
    assert record.months(now) == ["2026-05", "2026-06"]


def test_every_ordering_of_a_short_call_agrees() -> None:
    events = _a_call()[:4]
    results = {fold(CID, list(order)) for order in itertools.permutations(events)}
    assert len(results) == 1


def test_room_finished_stamped_after_the_reconciled_loss_still_wins() -> None:
    events = [
        *_a_call()[:-1],
        _room(EventKind.ROOM_LOST, T0 + 80 * S),
        _room(EventKind.ROOM_FINISHED, T0 + 81 * S),
    ]
    record = fold(CID, events)
    assert record.end_us == T0 + 81 * S
    assert record.end_reason is EndReason.USER_LEFT


def test_a_new_session_with_a_user_and_no_agent_needs_one() -> None:
    # A graceful LiveKit restart: the first room goes, the caller re-creates it, no agent comes.
    events = [
        *_a_call()[:3],
        _room(EventKind.ROOM_LOST, T0 + 40 * S),
        _person(EventKind.PARTICIPANT_JOINED, "PA_u2", Role.USER, T0 + 42 * S, sid="RM_2"),
    ]
    record = fold(CID, events)
    assert not record.agent_left_its_user()
    assert record.user_waits_for_agent()
    assert record.needs_agent()
    back = fold(
        CID, [*events, _person(EventKind.PARTICIPANT_JOINED, "PA_a2", Role.AGENT, T0 + 50 * S, sid="RM_2")]
    )
    assert not back.needs_agent()
    # The agent of the first session does not count for the second.
    assert fold(CID, _a_call()[:3]).needs_agent() is False
    assert fold(CID, _a_call()[:2]).user_waits_for_agent()
    # Nobody waits in an ended or empty session.
    assert not fold(CID, [*events, _room(EventKind.ROOM_FINISHED, T0 + 60 * S, sid="RM_2")]).needs_agent()
    assert not fold(CID, [_room(EventKind.ROOM_STARTED, T0)]).needs_agent()
