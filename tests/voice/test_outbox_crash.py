"""The outbox when its process is SIGKILLed: mid-send (no ack) and mid-turn (interim sent).

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
from collections.abc import Sequence
from pathlib import Path

import pytest

from devrun.launch import ROOT
from voice_worker.outbox import SUFFIX
from voice_worker.segments import Segment
from voice_worker.sender import drain_orphans

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
        async def report(self, conversation_id, segments):
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

    async def report(self, conversation_id: str, segments: Sequence[Segment]) -> None:
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
    """Runs the child until its sink has the batch, SIGKILLs it; returns what the sink stored."""
    delivered = directory.parent / "delivered.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(directory), str(delivered), scenario],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "recorded", child.stderr and child.stderr.read()
        deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
        while not (delivered.exists() and delivered.read_text().endswith("\n")):
            assert time.monotonic() < deadline, "the child never sent its batch"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=CHILD_TIMEOUT_SECONDS)
    assert child.returncode == -signal.SIGKILL
    return [Segment.from_json(line) for line in delivered.read_text().splitlines()]


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
