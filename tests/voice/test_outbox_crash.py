"""The outbox across process deaths: SIGKILL mid-send (no ack), mid-turn (interim sent), and
leftovers of several calls adopted by one new process.

A real child process owns the outbox and is killed with SIGKILL at the chosen point; the test then
adopts the file as a restarted worker does (`drain_orphans`) and checks what the sink ends up with.
The sink here stores segments by id the way chat_svc does (same id = same message).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from devrun.launch import ROOT
from voice_worker.outbox import SUFFIX, Outbox, orphaned, outbox_path
from voice_worker.segments import Segment
from voice_worker.sender import SinkUnavailableError, drain_orphans

pytestmark = pytest.mark.unit

CHILD_TIMEOUT_SECONDS = 60.0

# The child records turns through the real Outbox/OutboxSender; its sink writes each batch it is
# given to `delivered.jsonl` (chat_svc has stored it). "mid-send": the sink then never answers, so
# the child dies between "chat_svc stored it" and "the outbox deleted it" - the worst moment.
# "mid-turn": the sink answers, so an interim user turn is acknowledged and gone from the queue
# when the child dies before the user finished speaking.
_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from voice_worker.outbox import Outbox, outbox_path
    from voice_worker.segments import Segment
    from voice_worker.sender import OutboxSender

    directory, delivered, scenario = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    class StoresThenHangs:
        async def report(self, conversation_id, segments, call_metadata=None):
            with delivered.open("a") as out:
                for s in segments:
                    out.write(s.to_json() + "\\n")
            if scenario == "mid-send":
                await asyncio.Event().wait()

    async def main():
        box = Outbox(outbox_path(directory, "job-1"))
        sender = OutboxSender(box, StoresThenHangs(), initial_backoff=0.01, max_backoff=0.02)
        box.put("c1", Segment("job-1:agent:g", "agent", "Hello, how can I help?", final=True))
        if scenario == "mid-turn":
            box.put("c1", Segment("job-1:user:0", "user", "my internet keeps", final=False))
        sender.start()
        sender.notify()
        if scenario == "mid-turn":
            assert await sender.flush(30)
        print("recorded", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


class IdKeyedChat:
    """Stores segments by id like chat_svc: a repeated id updates, a final never turns interim."""

    def __init__(self, stored: Sequence[Segment] = ()) -> None:
        self.messages: dict[str, Segment] = {}
        self.order: list[str] = []
        self.reports = 0
        for segment in stored:
            self._store(segment)

    async def report(
        self,
        conversation_id: str,
        segments: Sequence[Segment],
        call_metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.reports += 1
        for segment in segments:
            self._store(segment)

    def _store(self, segment: Segment) -> None:
        current = self.messages.get(segment.segment_id)
        if current is None:
            self.order.append(segment.segment_id)
        if current is None or not current.final or segment.final:
            self.messages[segment.segment_id] = segment


def _kill_child_after_delivery(directory: Path, scenario: str) -> list[Segment]:
    """Runs the child until it has recorded and sent its turns, SIGKILLs it; returns what was stored."""
    delivered = directory.parent / "delivered.jsonl"
    log_path = directory.parent / "child.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(directory), str(delivered), scenario],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
        while not _says_recorded(log_path) or not delivered.exists():
            assert child.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the child did not get that far:\n" + log_path.read_text()
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(CHILD_TIMEOUT_SECONDS)
    assert child.returncode == -signal.SIGKILL
    return [Segment.from_json(line) for line in delivered.read_text().splitlines()]


def _says_recorded(log_path: Path) -> bool:
    return "recorded" in log_path.read_text().splitlines()


async def test_a_batch_stored_but_not_acknowledged_is_resent_once(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    stored = await asyncio.to_thread(_kill_child_after_delivery, directory, "mid-send")
    assert [s.segment_id for s in stored] == ["job-1:agent:g"]
    chat = IdKeyedChat(stored)

    emptied = await drain_orphans(directory, chat, initial_backoff=0.01, max_backoff=0.02, budget_seconds=10)

    assert emptied == 1
    assert chat.reports == 1, "the unacknowledged batch is sent again (nothing lost)"
    assert chat.order == ["job-1:agent:g"], "and lands on the same message (nothing doubled)"
    assert not list(directory.glob(f"*{SUFFIX}"))


async def test_a_turn_cut_off_by_a_crash_is_finalised_by_the_next_process(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    stored = await asyncio.to_thread(_kill_child_after_delivery, directory, "mid-turn")
    # chat_svc already holds the user's turn as interim: without the adopter it would stay so.
    assert [(s.segment_id, s.final) for s in stored] == [("job-1:agent:g", True), ("job-1:user:0", False)]
    chat = IdKeyedChat(stored)

    emptied = await drain_orphans(directory, chat, initial_backoff=0.01, max_backoff=0.02, budget_seconds=10)

    assert emptied == 1
    assert chat.reports == 1
    assert chat.order == ["job-1:agent:g", "job-1:user:0"]
    user = chat.messages["job-1:user:0"]
    assert user.final
    assert user.text == "my internet keeps"
    assert not list(directory.glob(f"*{SUFFIX}"))
    # A later start finds nothing: the finalised turn is not sent again.
    reports = chat.reports
    assert await drain_orphans(directory, chat, initial_backoff=0.01, max_backoff=0.02, budget_seconds=1) == 0
    assert chat.reports == reports


async def test_leftovers_of_several_calls_are_sent_in_the_order_the_calls_began(tmp_path: Path) -> None:
    # File names sort the other way round from when the calls began: order must not follow them.
    directory = tmp_path / "outbox"
    for call in ("job-z", "job-m", "job-a"):
        box = Outbox(outbox_path(directory, call))
        box.put("c1", Segment(f"{call}:user:0", "user", f"turn of {call}", final=True))
        box.close()  # undelivered: the file stays
    chat = IdKeyedChat()

    emptied = await drain_orphans(directory, chat, initial_backoff=0.01, max_backoff=0.02, budget_seconds=10)

    assert emptied == 3
    assert chat.order == ["job-z:user:0", "job-m:user:0", "job-a:user:0"]


async def test_files_not_reached_within_the_budget_are_released_for_the_next_start(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    for call in ("job-1", "job-2"):
        box = Outbox(outbox_path(directory, call))
        box.put("c1", Segment(f"{call}:user:0", "user", "hello", final=True))
        box.close()

    class Down:
        async def report(
            self,
            conversation_id: str,
            segments: Sequence[Segment],
            call_metadata: Mapping[str, str] | None = None,
        ) -> None:
            raise SinkUnavailableError("UNAVAILABLE")

    assert (
        await drain_orphans(directory, Down(), initial_backoff=0.01, max_backoff=0.02, budget_seconds=0.2)
        == 0
    )
    # Nothing is left locked: both files can be adopted again, and still hold their turns.
    adopted = list(orphaned(directory))
    assert sorted(box.pending_count() for box in adopted) == [1, 1]
    for box in adopted:
        box.close()
