"""Admissions reused for a moment, re-read off the request path, forgotten when the call changes (unit)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from agent_svc.call_control import ADMISSION_REUSE_SECONDS, CallControl
from agent_svc.call_ledger import CallLedger
from agent_svc.call_record import CallRecord
from agent_svc.call_store import StoredCall
from agent_svc.quota import QuotaGuard

pytestmark = pytest.mark.unit

SECOND = 1_000_000


class Store:
    def __init__(self) -> None:
        self.live = False
        self.reads = 0

    async def load(self, conversation_id: str) -> StoredCall | None:
        self.reads += 1
        if not self.live:
            return None
        return StoredCall(CallRecord(conversation_id), reserved_at_us=0, reserved_until_us=10**18)


class Ledger:
    def __init__(self) -> None:
        self.store = Store()
        self.listeners: list[Any] = []

    def on_change(self, listener: Any) -> None:
        self.listeners.append(listener)


class Guard:
    def __init__(self) -> None:
        self.admitted = 0

    async def admit(self, conversation_id: str, user_id: str, agent_id: str) -> None:
        self.admitted += 1


def _control(now: list[int]) -> tuple[CallControl, Guard, Ledger]:
    guard, ledger = Guard(), Ledger()
    control = CallControl(cast(QuotaGuard, guard), cast(CallLedger, ledger), clock=lambda: now[0])
    return control, guard, ledger


async def test_a_second_token_in_the_window_asks_nobody() -> None:
    now = [100 * SECOND]
    control, guard, ledger = _control(now)
    await control.admit("c1", "alice", "default")
    assert (guard.admitted, ledger.store.reads) == (1, 1)
    now[0] += SECOND
    await control.admit("c1", "alice", "default")
    assert (guard.admitted, ledger.store.reads) == (1, 1)


async def test_a_lapsed_window_is_read_again_off_the_request_path() -> None:
    now = [100 * SECOND]
    control, guard, ledger = _control(now)
    await control.admit("c1", "alice", "default")
    now[0] += int(ADMISSION_REUSE_SECONDS * 1.3 * SECOND)
    await control.admit("c1", "alice", "default")  # answered at once
    await asyncio.sleep(0)  # the background re-read: the call is not live, so it is forgotten
    assert ledger.store.reads == 2
    await control.admit("c1", "alice", "default")
    assert guard.admitted == 2


async def test_a_live_call_is_let_through_without_the_guard() -> None:
    now = [100 * SECOND]
    control, guard, ledger = _control(now)
    ledger.store.live = True
    await control.admit("c1", "alice", "default")
    assert guard.admitted == 0


async def test_a_change_of_the_call_ends_the_window() -> None:
    now = [100 * SECOND]
    control, guard, ledger = _control(now)
    await control.admit("c1", "alice", "default")
    for listener in ledger.listeners:
        listener(StoredCall(CallRecord("c1")))
    await control.admit("c1", "alice", "default")
    assert guard.admitted == 2
