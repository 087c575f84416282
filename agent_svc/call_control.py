"""The `CallGate` LiveKitAccess uses: the quota guard for admissions, the ledger for hang-ups."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from agent_svc.call_ledger import CallLedger
from agent_svc.call_record import CallEvent, EventKind
from agent_svc.call_store import StoredCall
from agent_svc.quota import QuotaGuard
from servicekit.times import US_PER_SECOND, now_us

# A conversation admitted here a moment ago is let through again without asking the store: a
# second token within this window (a reconnect, another tab, a retry) is the same call, which the
# guard would let through anyway. The guard's admission takes a process-wide lock around a store
# read, so without this every token of a busy replica queued behind the others' reads. Any change
# of the call seen here (its room started or finished) ends the window at once; a change seen only
# by another replica is taken into account by the next admission, at most this long later.
ADMISSION_REUSE_SECONDS = 2.0
# Conversations remembered at once (each entry is an id and a time).
_ADMITTED_MAX = 10_000


class CallControl:
    """Admits calls under the quota and records hang-ups.

    Args:
        guard: The quota guard.
        ledger: The call ledger.
        clock: UTC microseconds now.
        reuse_seconds: How long an admission lets the same conversation through again; 0 never.
    """

    def __init__(
        self,
        guard: QuotaGuard,
        ledger: CallLedger,
        clock: Callable[[], int] = now_us,
        reuse_seconds: float = ADMISSION_REUSE_SECONDS,
    ) -> None:
        self._guard = guard
        self._ledger = ledger
        self._clock = clock
        self._reuse_us = int(reuse_seconds * US_PER_SECOND)
        self._admitted: OrderedDict[str, int] = OrderedDict()
        ledger.on_change(self._call_changed)

    async def admit(self, conversation_id: str, user_id: str, agent_id: str) -> None:
        until = self._admitted.get(conversation_id)
        if until is not None and self._clock() < until:
            return
        await self._guard.admit(conversation_id, user_id, agent_id)
        if self._reuse_us > 0:
            self._admitted[conversation_id] = self._clock() + self._reuse_us
            self._admitted.move_to_end(conversation_id)
            while len(self._admitted) > _ADMITTED_MAX:
                self._admitted.popitem(last=False)

    async def hung_up(self, conversation_id: str, room_sid: str) -> None:
        self._admitted.pop(conversation_id, None)
        # One deletion per room incarnation, however often DeleteRoom is called for it.
        await self._ledger.ingest(
            CallEvent(
                f"mesh:{room_sid}:deleted", EventKind.ROOM_DELETED, conversation_id, room_sid, self._clock()
            )
        )

    def _call_changed(self, call: StoredCall) -> None:
        self._admitted.pop(call.conversation_id, None)
