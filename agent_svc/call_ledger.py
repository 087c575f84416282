"""The call ledger: takes call events (webhooks, reconciliation, the mesh's own), keeps each once,
refolds the conversation's call and hands every new revision to chat_svc.

chat_svc is told asynchronously: a webhook is answered once its event is stored, whether or not
chat_svc is reachable. Unsent revisions stay marked in the store and a background loop sends them
until chat_svc has them; chat_svc keeps the highest revision, so late or repeated sends are harmless.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Protocol

import structlog

from agent_svc.call_record import CallEvent, CallRecord, fold
from agent_svc.call_store import CallStore, StoredCall, with_record
from servicekit.errors import DomainError
from servicekit.times import now_us

log = structlog.get_logger("agent_svc.calls")

# Optimistic-concurrency attempts when another writer saved the same call in between.
_SAVE_ATTEMPTS = 8
SYNC_INTERVAL_SECONDS = 2.0


class CallRecordRejectedError(Exception):
    """chat_svc will never take this record (it has no such conversation): stop sending it."""


class CallSink(Protocol):
    """Where call records go: chat_svc's RecordCall."""

    async def record(self, call: StoredCall) -> None:
        """Sends the record.

        Raises:
            DomainError: UNAVAILABLE and the like; the record is sent again later.
            CallRecordRejectedError: It will never be accepted.
        """
        ...


Listener = Callable[[StoredCall], None]


class CallLedger:
    """Ingests events and keeps `calls` and chat_svc up to date.

    Args:
        store: The call store.
        sink: chat_svc, or None when there is no chat_svc to tell (dev mode without it).
        clock: UTC microseconds now (tests pin it).
    """

    def __init__(self, store: CallStore, sink: CallSink | None, clock: Callable[[], int] = now_us) -> None:
        self._store = store
        self._sink = sink
        self._clock = clock
        self._listeners: list[Listener] = []
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._pushes: set[asyncio.Task[bool]] = set()

    @property
    def store(self) -> CallStore:
        return self._store

    def on_change(self, listener: Listener) -> None:
        """Calls `listener` (synchronously; it must not block) with every new revision saved here."""
        self._listeners.append(listener)

    async def ingest(self, event: CallEvent) -> bool:
        """Records the event and refolds its call; False when it had been recorded before."""
        if not await self._store.add_event(event):
            return False
        await self.refresh(event.conversation_id)
        return True

    async def refresh(self, conversation_id: str) -> StoredCall:
        """Refolds the call from every stored event and saves it if it changed."""
        async with self._lock(conversation_id):
            for _ in range(_SAVE_ATTEMPTS):
                current = await self._store.load(conversation_id)
                record = fold(conversation_id, await self._store.events(conversation_id))
                base = current or StoredCall(CallRecord(conversation_id))
                if current is not None and current.record == record:
                    return current
                now = self._clock()
                changed = with_record(base, record, now)
                if await self._store.save(changed, None if current is None else current.revision, now):
                    break
            else:
                # Only another replica saving the same call over and over gets here; its save is as
                # good as ours (both folded the stored events).
                log.warning("call not saved after retries", conversation_id=conversation_id)
                stored = await self._store.load(conversation_id)
                return stored or base
        log.info(
            "call changed",
            conversation_id=conversation_id,
            state=changed.record.state.value,
            revision=changed.revision,
            participants=len(changed.record.participants),
        )
        for listener in self._listeners:
            listener(changed)
        self._push_soon(changed)
        return changed

    async def sync_pending(self) -> int:
        """Sends every record chat_svc does not have yet; returns how many it took."""
        if self._sink is None:
            return 0
        sent = 0
        for call in await self._store.unsynced():
            if await self._push(call):
                sent += 1
        return sent

    async def run_sync(self, stop: asyncio.Event) -> None:
        """Retries unsent records every few seconds until `stop` is set."""
        while not stop.is_set():
            try:
                await self.sync_pending()
            except DomainError as exc:
                log.warning("call sync failed; retrying", reason=exc.reason)
            except Exception as exc:  # noqa: BLE001 - the next round may succeed; the loop must live
                log.error("call sync crashed; retrying", error_type=type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), SYNC_INTERVAL_SECONDS)
            except TimeoutError:
                continue

    async def aclose(self) -> None:
        for task in list(self._pushes):
            task.cancel()
        if self._pushes:
            await asyncio.wait(self._pushes, timeout=2.0)

    def _push_soon(self, call: StoredCall) -> None:
        if self._sink is None:
            return
        task = asyncio.create_task(self._push(call), name=f"push-call-{call.conversation_id}")
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _push(self, call: StoredCall) -> bool:
        assert self._sink is not None  # noqa: S101 - callers check
        try:
            await self._sink.record(call)
        except CallRecordRejectedError:
            log.warning("chat_svc refused a call record", conversation_id=call.conversation_id)
        except DomainError as exc:
            log.info("call record not delivered yet", conversation_id=call.conversation_id, reason=exc.reason)
            return False
        try:
            await self._store.mark_synced(call.conversation_id, call.revision)
        except DomainError as exc:
            # chat_svc has it; marking it again later is harmless (it keeps the highest revision).
            log.info("call sync not marked", conversation_id=call.conversation_id, reason=exc.reason)
            return False
        return True

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[conversation_id] = lock
        return lock
