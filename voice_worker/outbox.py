"""The transcript outbox: a SQLite file per call that holds every turn until chat_svc has it.

Why a file per call: LiveKit runs each job in its own process, and a file locked by its owner
(flock on a sibling `.lock` file) makes "who sends these rows" unambiguous — the live job sends
its own; any process may adopt a file whose owner has gone (a crash or a flush that timed out)
and send what is left.

Why one row per segment: a newer state of a turn that is still unsent replaces the older one in
place (keeping its position), so the sender only ever sends each segment's latest state in the
order the turns began. A resent batch is therefore harmless: chat_svc keys segments by id.

Why open turns are remembered: an interim user turn is sent (and acknowledged) before the user
has finished speaking. If the process dies then, chat_svc would keep that turn as interim for
good. So the latest state of every turn that has not been finalised is also kept in `open_turns`
until its final state is recorded; whoever adopts the file finalises those turns as heard, as a
clean end of the call would have done.

Durability: WAL with synchronous=NORMAL survives the process being killed (SIGKILL), which is
the failure the outbox is for; it does not promise to survive a power cut.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path

from voice_worker.segments import Segment

SUFFIX = ".outbox.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    segment_id TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS open_turns (
    segment_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    body TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Pending:
    """A segment waiting to be sent, with the version that must still be current to delete it."""

    position: int
    conversation_id: str
    version: int
    segment: Segment


class OutboxLockedError(RuntimeError):
    """Another live process owns this outbox file."""


class Outbox:
    """One call's outbox file. Not thread-safe; use from one event loop."""

    def __init__(self, path: Path, *, owner: bool = True) -> None:
        """Opens (creating) `path` and locks it for this process.

        Raises:
            OutboxLockedError: another live process holds the lock.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise OutboxLockedError(str(path)) from None
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        if owner:
            # When the call began, so leftovers of several calls are sent in the order they happened.
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_ns', ?)", (time.time_ns(),)
            )
        self.owner = owner

    def created_ns(self) -> int:
        """When the owner created the file (ns since the epoch); 0 for files that do not say."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'created_ns'").fetchone()
        return int(row[0]) if row else 0

    def put(self, conversation_id: str, segment: Segment) -> None:
        """Persists the newest state of a segment (replacing an unsent older state in place)."""
        body = segment.to_json()
        with self._transaction():
            self._db.execute(
                "INSERT INTO pending (conversation_id, segment_id, version, body) VALUES (?, ?, 1, ?) "
                "ON CONFLICT(segment_id) DO UPDATE SET version = version + 1, body = excluded.body",
                (conversation_id, segment.segment_id, body),
            )
            if segment.final:
                self._db.execute("DELETE FROM open_turns WHERE segment_id = ?", (segment.segment_id,))
            else:
                self._db.execute(
                    "INSERT INTO open_turns (segment_id, conversation_id, body) VALUES (?, ?, ?) "
                    "ON CONFLICT(segment_id) DO UPDATE SET body = excluded.body",
                    (segment.segment_id, conversation_id, body),
                )

    def finalize_open_turns(self) -> int:
        """Records every turn still interim as final with the text heard so far; returns how many.

        Called when the call is over: by the owner at its end, or by a process adopting the file
        of one that died mid-turn. A turn with no text heard is dropped (there is nothing to store).
        """
        rows = self._db.execute("SELECT conversation_id, body FROM open_turns ORDER BY rowid").fetchall()
        finalized = 0
        for conversation_id, body in rows:
            segment = Segment.from_json(body)
            if segment.text.strip():
                self.put(conversation_id, replace(segment, final=True))
                finalized += 1
            else:
                self._db.execute("DELETE FROM open_turns WHERE segment_id = ?", (segment.segment_id,))
        return finalized

    def peek(self, limit: int) -> list[Pending]:
        """The oldest pending segments of the oldest conversation, at most `limit`."""
        first = self._db.execute("SELECT conversation_id FROM pending ORDER BY position LIMIT 1").fetchone()
        if first is None:
            return []
        rows = self._db.execute(
            "SELECT position, conversation_id, version, body FROM pending WHERE conversation_id = ? "
            "ORDER BY position LIMIT ?",
            (first[0], limit),
        ).fetchall()
        return [Pending(r[0], r[1], r[2], Segment.from_json(r[3])) for r in rows]

    def ack(self, sent: list[Pending]) -> None:
        """Removes sent segments unless a newer state was recorded while they were in flight."""
        with self._transaction():
            self._db.executemany(
                "DELETE FROM pending WHERE position = ? AND version = ?",
                [(p.position, p.version) for p in sent],
            )

    def bury(self, sent: list[Pending], reason: str) -> None:
        """Moves segments chat_svc refused for good to the `dead` table, so they stop blocking."""
        with self._transaction():
            for p in sent:
                self._db.execute(
                    "INSERT INTO dead (conversation_id, segment_id, body, reason) VALUES (?, ?, ?, ?)",
                    (p.conversation_id, p.segment.segment_id, p.segment.to_json(), reason),
                )
            self._db.executemany(
                "DELETE FROM pending WHERE position = ? AND version = ?",
                [(p.position, p.version) for p in sent],
            )

    def pending_count(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()
        return int(row[0])

    def open_count(self) -> int:
        """Turns whose final state has not been recorded yet."""
        row = self._db.execute("SELECT COUNT(*) FROM open_turns").fetchone()
        return int(row[0])

    def dead_count(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM dead").fetchone()
        return int(row[0])

    def close(self, *, remove_if_done: bool = True) -> None:
        """Closes the file; deletes it when nothing is pending or dead, then releases the lock."""
        done = self.pending_count() == 0 and self.dead_count() == 0 and self.open_count() == 0
        self._db.close()
        if remove_if_done and done:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            Path(_lock_path(self.path)).unlink(missing_ok=True)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    def _transaction(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _lock_path(path: Path) -> str:
    return f"{path}.lock"


def outbox_path(directory: Path, call_id: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in call_id)[:120]
    return directory / f"{safe}{SUFFIX}"


def orphaned(directory: Path) -> Generator[Outbox, None, None]:
    """Each outbox file in `directory` that no live process owns, oldest call first.

    All of them are locked up front (so the order is known and no other process interleaves its
    sends with ours); the caller closes each one it is given, and those it never takes are closed
    when the iteration ends.
    """
    if not directory.is_dir():
        return
    boxes: list[Outbox] = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            boxes.append(Outbox(path, owner=False))
        except OutboxLockedError:
            continue
    boxes.sort(key=lambda box: box.created_ns())
    try:
        while boxes:
            yield boxes.pop(0)
    finally:
        for box in boxes:
            box.close()
