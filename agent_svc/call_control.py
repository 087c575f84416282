"""The `CallGate` LiveKitAccess uses: the quota guard for admissions, the ledger for hang-ups."""

from __future__ import annotations

from collections.abc import Callable

from agent_svc.call_ledger import CallLedger
from agent_svc.call_record import CallEvent, EventKind
from agent_svc.quota import QuotaGuard
from servicekit.times import now_us


class CallControl:
    """Admits calls under the quota and records hang-ups.

    Args:
        guard: The quota guard.
        ledger: The call ledger.
        clock: UTC microseconds now.
    """

    def __init__(self, guard: QuotaGuard, ledger: CallLedger, clock: Callable[[], int] = now_us) -> None:
        self._guard = guard
        self._ledger = ledger
        self._clock = clock

    async def admit(self, conversation_id: str, user_id: str, agent_id: str) -> None:
        await self._guard.admit(conversation_id, user_id, agent_id)

    async def hung_up(self, conversation_id: str, room_sid: str) -> None:
        # One deletion per room incarnation, however often DeleteRoom is called for it.
        await self._ledger.ingest(
            CallEvent(
                f"mesh:{room_sid}:deleted", EventKind.ROOM_DELETED, conversation_id, room_sid, self._clock()
            )
        )
