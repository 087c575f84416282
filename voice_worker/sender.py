"""Sends what is in an outbox to chat_svc, retrying with backoff while chat_svc is unreachable.

The sender never holds turns in memory only: it reads from the outbox, and deletes a row only
after chat_svc acknowledged exactly that state of the segment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Protocol

import structlog

from servicekit.backoff import Backoff
from voice_worker import metrics
from voice_worker.outbox import Outbox, Pending, orphaned
from voice_worker.segments import Segment

log = structlog.get_logger("voice_worker.sender")

BATCH_LIMIT = 100  # ReportTranscript accepts 1 to 100 segments


class SinkUnavailableError(Exception):
    """The transcript sink could not take the batch now; the same batch may be retried."""


class SinkRejectedError(Exception):
    """The transcript sink refused the batch for good (e.g. the conversation does not exist)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TranscriptSink(Protocol):
    """Where segments go: chat_svc's ReportTranscript in production, a fake in unit tests."""

    async def report(
        self,
        conversation_id: str,
        segments: Sequence[Segment],
        call_metadata: Mapping[str, str] | None = None,
    ) -> None: ...


class OutboxSender:
    """Drains one outbox into a sink, oldest first, with capped exponential backoff and jitter."""

    def __init__(
        self,
        outbox: Outbox,
        sink: TranscriptSink,
        *,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
        call_metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._outbox = outbox
        self._sink = sink
        # Facts about the call (providers, models) for the conversation's metadata; sent with every
        # batch because chat_svc merges them idempotently and any batch may be the first to land.
        self._call_metadata = dict(call_metadata or {})
        # Jittered: the workers of one deployment lose chat_svc together and must not all come back
        # at the same instants.
        self._backoff = Backoff(initial_backoff, max_backoff)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent_batches = 0
        self.failed_attempts = 0
        # For the metrics (voice_worker.metrics): turns waiting, since when the outbox holds any,
        # and when the sender first saw each waiting turn (its delivery latency starts there).
        self.pending = 0
        self.pending_since: float | None = None
        self._first_seen: dict[str, float] = {}
        metrics.OUTBOXES.track(self)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox-sender:{self._outbox.path.name}")

    def notify(self) -> None:
        """Tells the sender new rows are waiting."""
        self._idle.clear()
        self._wake.set()

    async def flush(self, limit_seconds: float) -> bool:
        """Waits until the outbox is empty, at most `limit_seconds` seconds; True when it is."""
        if self._outbox.pending_count() == 0:
            return True
        self.notify()
        try:
            async with asyncio.timeout(limit_seconds):
                while self._outbox.pending_count() > 0:
                    await self._idle.wait()
                    if self._outbox.pending_count() > 0:
                        self._idle.clear()
                        self._wake.set()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            batch = self._outbox.peek(BATCH_LIMIT)
            self._observe_waiting(batch)
            if not batch:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._send(batch)
            except SinkUnavailableError:
                self.failed_attempts += 1
                delay = self._backoff.next_delay()
                log.warning(
                    "transcript sink unavailable; will retry",
                    pending=self._outbox.pending_count(),
                    retry_in_seconds=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()

    async def _send(self, batch: list[Pending]) -> None:
        conversation_id = batch[0].conversation_id
        try:
            await self._sink.report(conversation_id, [p.segment for p in batch], self._call_metadata or None)
        except SinkRejectedError as exc:
            log.error(
                "transcript segments refused; kept aside",
                conversation_id=conversation_id,
                segments=len(batch),
                reason=exc.reason,
            )
            self._outbox.bury(batch, exc.reason)
            return
        self._outbox.ack(batch)
        now = time.monotonic()
        for pending in batch:
            seen = self._first_seen.pop(pending.segment.segment_id, None)
            if seen is not None:
                metrics.DELIVERY_SECONDS.observe(now - seen)
        self.sent_batches += 1
        log.debug("transcript segments sent", conversation_id=conversation_id, segments=len(batch))

    def _observe_waiting(self, batch: list[Pending]) -> None:
        now = time.monotonic()
        self.pending = self._outbox.pending_count()
        if not self.pending:
            self.pending_since = None
            self._first_seen.clear()
            return
        if self.pending_since is None:
            self.pending_since = now
        for pending in batch:
            self._first_seen.setdefault(pending.segment.segment_id, now)


async def drain_orphans(
    directory: Path,
    sink: TranscriptSink,
    *,
    initial_backoff: float,
    max_backoff: float,
    budget_seconds: float | None = None,
) -> int:
    """Sends what earlier processes left in their outboxes; returns how many files were emptied.

    Runs until each orphaned file is empty (or `budget_seconds` pass); files it could not empty
    stay for the next start.
    """

    emptied = 0
    loop = asyncio.get_running_loop()
    deadline = None if budget_seconds is None else loop.time() + budget_seconds
    with closing(orphaned(directory)) as boxes:
        for box in boxes:
            # Its owner is gone, so its call is over: a turn cut off mid-speech is final as heard.
            box.finalize_open_turns()
            left = box.pending_count()
            log.info("sending turns left by an earlier worker", outbox=box.path.name, pending=left)
            sender = OutboxSender(box, sink, initial_backoff=initial_backoff, max_backoff=max_backoff)
            sender.start()
            try:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                done = await sender.flush(remaining if remaining is not None else float("inf"))
            finally:
                await sender.aclose()
                box.close()
            emptied += int(done)
            if deadline is not None and loop.time() >= deadline:
                break
    return emptied
