"""One MongoDB change stream per collection and process, fanned out to local subscribers.

Watchers never open change streams of their own: a stream per watcher would cost the store a
cursor each. The feed looks up the current document for each changed id (what `updateLookup`
does on a replica set, done here so both stores behave the same) and hands it to every
subscription registered under one of the document's keys.

Gap-freeness: a watcher subscribes, waits until the feed's stream is open, and only then reads
the stored state, so every write is either in that read or comes through the feed afterwards.
Whenever the stream may have missed something (it failed and was reopened, or the driver had to
reconnect and resumed it silently), the feed sends RESYNC and each watcher reads again; watchers
drop what they already delivered, so this never duplicates.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from pymongo import monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure, PyMongoError

from chat_svc.store import Document, store_unavailable
from servicekit.backoff import Backoff

log = structlog.get_logger("chat_svc.changefeed")

_WATCHED_OPERATIONS = ["insert", "update", "replace"]
_BATCH_MAX = 500
_RETRY_MIN_SECONDS = 0.1
_RETRY_MAX_SECONDS = 2.0
_CLOSE_WAIT_SECONDS = 5.0


class _CursorLost(Exception):
    """The change stream's server cursor is gone without an error."""


class Signal(enum.Enum):
    """Control items a subscription may receive besides changes."""

    RESYNC = "resync"  # the feed may have missed changes: read the stored state again
    CLOSED = "closed"  # the feed is shutting down: end the stream


@dataclass(frozen=True)
class Change:
    """A changed document in its current state, and how it changed first in this batch."""

    feed: str
    operation: str
    document: Document


FeedItem = Change | Signal


class Subscription:
    """A queue of feed items for one watcher."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[FeedItem] = asyncio.Queue()

    def put(self, item: FeedItem) -> None:
        self.queue.put_nowait(item)

    async def get(self, idle_seconds: float) -> FeedItem | None:
        """The next item, or None after `idle_seconds` of silence."""
        try:
            return await asyncio.wait_for(self.queue.get(), idle_seconds)
        except TimeoutError:
            return None


class Disruptions(monitoring.ConnectionPoolListener):
    """Counts connection-pool clears: each one means the driver lost the store for a moment.

    The driver resumes a change stream by itself after such a failure; the embedded store may
    have recorded no changes while it restarted, so the feed treats every clear as a possible gap.
    """

    def __init__(self) -> None:
        self.generation = 0

    def pool_cleared(self, event: monitoring.PoolClearedEvent) -> None:
        self.generation += 1

    def pool_created(self, event: monitoring.PoolCreatedEvent) -> None: ...
    def pool_ready(self, event: monitoring.PoolReadyEvent) -> None: ...
    def pool_closed(self, event: monitoring.PoolClosedEvent) -> None: ...
    def connection_created(self, event: monitoring.ConnectionCreatedEvent) -> None: ...
    def connection_ready(self, event: monitoring.ConnectionReadyEvent) -> None: ...
    def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None: ...
    def connection_check_out_started(self, event: monitoring.ConnectionCheckOutStartedEvent) -> None: ...
    def connection_check_out_failed(self, event: monitoring.ConnectionCheckOutFailedEvent) -> None: ...
    def connection_checked_out(self, event: monitoring.ConnectionCheckedOutEvent) -> None: ...
    def connection_checked_in(self, event: monitoring.ConnectionCheckedInEvent) -> None: ...


class ChangeFeed:
    """Follows one collection and dispatches current documents to subscriptions by key."""

    def __init__(
        self,
        name: str,
        collection: AsyncCollection[Document],
        keys: Callable[[Document], Iterable[str]],
        poll_seconds: float,
        disruptions: Disruptions,
    ) -> None:
        self._name = name
        self._collection = collection
        self._keys = keys
        self._poll = poll_seconds
        self._disruptions = disruptions
        self._subscribers: dict[str, set[Subscription]] = {}
        self._open = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"changefeed-{self._name}")

    async def close(self) -> None:
        """Stops following and tells every subscription to end."""
        self._closed = True
        for subscriptions in list(self._subscribers.values()):
            for subscription in subscriptions:
                subscription.put(Signal.CLOSED)
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=_CLOSE_WAIT_SECONDS)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("change feed ended with an error", feed=self._name)

    def subscribe(self, key: str, subscription: Subscription) -> None:
        self._subscribers.setdefault(key, set()).add(subscription)
        if self._closed:
            subscription.put(Signal.CLOSED)

    def unsubscribe(self, key: str, subscription: Subscription) -> None:
        subscriptions = self._subscribers.get(key)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscribers[key]

    def publish(self, operation: str, document: Document) -> None:
        """Hands a write this process just made, once the store acknowledged it, to local subscribers.

        Watchers on this replica then see it without waiting for the stream's next poll. The stream
        stays the truth: it brings the same change again (and to every other replica), and watchers
        keep a change only if its revision is newer than what they already sent.
        """
        item = Change(self._name, operation, document)
        for key in self._keys(document):
            for subscription in list(self._subscribers.get(key, ())):
                subscription.put(item)

    async def wait_open(self, limit_seconds: float) -> None:
        """Returns once the stream is open; UNAVAILABLE if it cannot be opened in time."""
        try:
            await asyncio.wait_for(self._open.wait(), limit_seconds)
        except TimeoutError:
            raise store_unavailable() from None

    def _broadcast(self, item: FeedItem) -> None:
        for subscriptions in list(self._subscribers.values()):
            for subscription in subscriptions:
                subscription.put(item)

    async def _run(self) -> None:
        token: Any = None
        reopened = False
        # Jittered: every replica's feed loses the store at the same moment and must not come back
        # to it in lockstep.
        backoff = Backoff(_RETRY_MIN_SECONDS, _RETRY_MAX_SECONDS)
        while not self._closed:
            try:
                generation = self._disruptions.generation
                async with await self._collection.watch(
                    [{"$match": {"operationType": {"$in": _WATCHED_OPERATIONS}}}],
                    full_document="updateLookup",
                    resume_after=token,
                ) as stream:
                    token = stream.resume_token
                    self._open.set()
                    if reopened:
                        log.info("change stream reopened", feed=self._name)
                        self._broadcast(Signal.RESYNC)
                    backoff.reset()
                    # The flag, not only cancellation, ends the loop: the driver may absorb a
                    # cancellation that lands inside one of its own awaits.
                    while not self._closed:
                        batch: list[dict[str, Any]] = []
                        while len(batch) < _BATCH_MAX:
                            change = await stream.try_next()
                            if change is None:
                                break
                            batch.append(change)
                        token = stream.resume_token or token
                        if batch:
                            await self._dispatch(batch)
                        if self._disruptions.generation != generation:
                            generation = self._disruptions.generation
                            log.info("store connection was reset; resyncing watchers", feed=self._name)
                            self._broadcast(Signal.RESYNC)
                        if not batch:
                            if not stream.alive:
                                # The server dropped the cursor (the embedded store does so
                                # silently after a restart): reopen from the resume token.
                                raise _CursorLost
                            await asyncio.sleep(self._poll)
            except asyncio.CancelledError:
                raise
            except (PyMongoError, _CursorLost) as exc:
                self._open.clear()
                reopened = True
                if isinstance(exc, OperationFailure):
                    token = None  # the resume point is gone; start fresh, watchers resync anyway
                log.warning("change stream failed; reopening", feed=self._name, error_type=type(exc).__name__)
                await backoff.wait()

    async def _dispatch(self, batch: list[dict[str, Any]]) -> None:
        first_operation: dict[Any, str] = {}
        for change in batch:
            key = (change.get("documentKey") or {}).get("_id")
            if key is not None:
                first_operation.setdefault(key, str(change.get("operationType", "")))
        if not first_operation:
            return
        ids = list(first_operation)
        docs = {doc["_id"]: doc async for doc in self._collection.find({"_id": {"$in": ids}})}
        for doc_id in ids:
            doc = docs.get(doc_id)
            if doc is None:
                continue
            item = Change(self._name, first_operation[doc_id], doc)
            for key in self._keys(doc):
                for subscription in list(self._subscribers.get(key, ())):
                    subscription.put(item)
