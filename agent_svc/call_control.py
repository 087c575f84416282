"""The `CallGate` LiveKitAccess uses: the quota guard for admissions, the ledger for hang-ups."""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import Callable

import structlog

from agent_svc.call_ledger import CallLedger
from agent_svc.call_record import CallEvent, EventKind
from agent_svc.call_store import StoredCall
from agent_svc.quota import QuotaGuard
from servicekit.times import US_PER_SECOND, now_us

log = structlog.get_logger("agent_svc.calls")

# A conversation admitted here a moment ago is let through again without asking the store: a
# second token within this window (a reconnect, another tab, a retry) is the same call, which the
# guard would let through anyway. The guard's admission takes a process-wide lock around a store
# read, so without this every token of a busy replica queued behind the others' reads. Any change
# of the call seen here (its room started or finished) ends the window at once; a change seen only
# by another process is taken into account within twice this long (the window, ±25 %, then a
# background re-read while the same answer is given).
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
        self._checking: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        ledger.on_change(self._call_changed)

    async def admit(self, conversation_id: str, user_id: str, agent_id: str) -> None:
        until = self._admitted.get(conversation_id)
        if until is not None:
            now = self._clock()
            if now < until:
                return
            if now < until + self._reuse_us:
                # Lapsed a moment ago: answer as before and read the call again in the background,
                # so no token waits on the store for a conversation it saw a moment ago (those
                # reads were the token path's slowest calls). A call found over is forgotten, and
                # its next token is admitted under the quota.
                if conversation_id not in self._checking:
                    self._checking.add(conversation_id)
                    task = asyncio.create_task(self._recheck(conversation_id))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                return
        # A call that is live (or held) passes the guard without a new hold; reading that needs
        # none of the guard's lock, which only keeps check-then-hold from interleaving.
        stored = await self._ledger.store.load(conversation_id)
        if stored is None or not stored.live(self._clock()):
            await self._guard.admit(conversation_id, user_id, agent_id)
        self._remember(conversation_id)

    async def _recheck(self, conversation_id: str) -> None:
        try:
            stored = await self._ledger.store.load(conversation_id)
        except Exception as exc:  # noqa: BLE001 - a background read: forget, the next token asks again
            log.warning("admission re-check failed", error_type=type(exc).__name__)
            stored = None
        finally:
            self._checking.discard(conversation_id)
        if stored is not None and stored.live(self._clock()):
            self._remember(conversation_id)
        else:
            self._admitted.pop(conversation_id, None)

    def _remember(self, conversation_id: str) -> None:
        if self._reuse_us <= 0:
            return
        # Spread over ±25 %, so conversations admitted together are not all read again together.
        window = int(self._reuse_us * (0.75 + 0.5 * random.random()))  # noqa: S311 - not security
        self._admitted[conversation_id] = self._clock() + window
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
