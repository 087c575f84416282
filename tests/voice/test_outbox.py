"""The outbox and its sender: nothing lost, nothing doubled, order kept, across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from voice_worker.outbox import Outbox, OutboxLockedError, orphaned, outbox_path
from voice_worker.profile import AgentProfile
from voice_worker.providers import ProviderChoiceError, build_providers
from voice_worker.segments import Segment
from voice_worker.sender import OutboxSender, SinkRejectedError, SinkUnavailableError, drain_orphans
from voice_worker.settings import VoiceWorkerSettings

pytestmark = pytest.mark.unit


def seg(sid: str, text: str, *, final: bool = True, role: str = "user") -> Segment:
    return Segment(segment_id=sid, role=role, text=text, final=final)  # type: ignore[arg-type]


class FakeChat:
    """Stores segments by id like chat_svc does; can be switched off or made to refuse."""

    def __init__(self) -> None:
        self.messages: dict[str, Segment] = {}
        self.order: list[str] = []
        self.up = True
        self.refuse: set[str] = set()
        self.calls = 0
        self.call_metadata: dict[str, str] = {}

    async def report(
        self,
        conversation_id: str,
        segments: Sequence[Segment],
        call_metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.calls += 1
        if not self.up:
            raise SinkUnavailableError("UNAVAILABLE")
        if conversation_id in self.refuse:
            raise SinkRejectedError("NOT_FOUND: conversation")
        self.call_metadata.update(call_metadata or {})
        for s in segments:
            if s.segment_id not in self.messages:
                self.order.append(s.segment_id)
            current = self.messages.get(s.segment_id)
            if current is None or not current.final or s.final:
                self.messages[s.segment_id] = s


def test_newer_state_replaces_unsent_one_in_place(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "a.outbox.sqlite")
    box.put("c1", seg("u0", "hel", final=False))
    box.put("c1", seg("a0", "hi", role="agent"))
    box.put("c1", seg("u0", "hello", final=True))
    pending = box.peek(10)
    assert [(p.segment.segment_id, p.segment.text, p.segment.final) for p in pending] == [
        ("u0", "hello", True),
        ("a0", "hi", True),
    ]
    box.close()


def test_ack_keeps_a_state_recorded_while_in_flight(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "a.outbox.sqlite")
    box.put("c1", seg("u0", "hel", final=False))
    in_flight = box.peek(10)
    box.put("c1", seg("u0", "hello", final=True))
    box.ack(in_flight)
    assert [p.segment.text for p in box.peek(10)] == ["hello"]
    box.close()


def test_file_is_locked_by_its_owner_and_adopted_after(tmp_path: Path) -> None:
    path = outbox_path(tmp_path, "job-1")
    box = Outbox(path)
    box.put("c1", seg("u0", "hello"))
    with pytest.raises(OutboxLockedError):
        Outbox(path)
    assert list(orphaned(tmp_path)) == []
    box.close()
    adopted = list(orphaned(tmp_path))
    assert len(adopted) == 1
    assert adopted[0].pending_count() == 1
    adopted[0].close()


async def test_sender_retries_until_the_sink_is_back_then_delivers_in_order(tmp_path: Path) -> None:
    chat = FakeChat()
    chat.up = False
    box = Outbox(tmp_path / "a.outbox.sqlite")
    sender = OutboxSender(box, chat, initial_backoff=0.01, max_backoff=0.05)
    sender.start()
    for i in range(5):
        box.put("c1", seg(f"u{i}", f"turn {i}"))
        sender.notify()
    assert not await sender.flush(0.3)
    assert sender.failed_attempts >= 2
    chat.up = True
    assert await sender.flush(2.0)
    assert chat.order == [f"u{i}" for i in range(5)]
    await sender.aclose()
    box.close()
    assert not (tmp_path / "a.outbox.sqlite").exists()


async def test_worker_restart_sends_leftovers_once(tmp_path: Path) -> None:
    chat = FakeChat()
    chat.up = False
    first = Outbox(outbox_path(tmp_path, "job-1"))
    sender = OutboxSender(first, chat, initial_backoff=0.01, max_backoff=0.02)
    sender.start()
    first.put("c1", seg("u0", "one"))
    first.put("c1", seg("a0", "two", role="agent"))
    sender.notify()
    assert not await sender.flush(0.1)  # the bounded flush at job end gives up...
    await sender.aclose()
    first.close()  # ...and the turns stay on disk
    chat.up = True
    emptied = await drain_orphans(tmp_path, chat, initial_backoff=0.01, max_backoff=0.02, budget_seconds=5)
    assert emptied == 1
    assert chat.order == ["u0", "a0"]
    assert await asyncio.to_thread(lambda: list(tmp_path.glob("*.sqlite"))) == []
    # A second start finds nothing left: nothing is sent twice.
    calls = chat.calls
    assert await drain_orphans(tmp_path, chat, initial_backoff=0.01, max_backoff=0.02, budget_seconds=1) == 0
    assert chat.calls == calls


async def test_refused_segments_are_kept_aside_and_do_not_block(tmp_path: Path) -> None:
    chat = FakeChat()
    chat.refuse.add("gone")
    box = Outbox(tmp_path / "a.outbox.sqlite")
    sender = OutboxSender(box, chat, initial_backoff=0.01, max_backoff=0.02)
    sender.start()
    box.put("gone", seg("x0", "lost conversation"))
    box.put("c1", seg("u0", "fine"))
    sender.notify()
    assert await sender.flush(2.0)
    assert chat.order == ["u0"]
    assert box.dead_count() == 1
    await sender.aclose()
    box.close()
    assert await asyncio.to_thread((tmp_path / "a.outbox.sqlite").exists)  # kept for a person to look at


async def test_flush_of_an_empty_outbox_returns_at_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "a.outbox.sqlite")
    sender = OutboxSender(box, FakeChat())
    sender.start()
    assert await asyncio.wait_for(sender.flush(5.0), 1.0)
    await sender.aclose()
    box.close()


def test_profile_asking_for_an_unknown_offline_model_is_refused() -> None:
    settings = VoiceWorkerSettings(SYNTERA_DEV_MODE=True, _env_file=None)  # type: ignore[call-arg]
    profile = AgentProfile(agent_id="a1", display_name="A", tts_model="nobody/voice", provider_mode="offline")
    with pytest.raises(ProviderChoiceError, match="unknown offline tts model 'nobody/voice'"):
        build_providers(settings, profile)


def test_profile_asking_for_cloud_without_credentials_is_refused() -> None:
    settings = VoiceWorkerSettings(SYNTERA_DEV_MODE=True, _env_file=None)  # type: ignore[call-arg]
    profile = AgentProfile(agent_id="a1", display_name="A", provider_mode="cloud")
    with pytest.raises(ProviderChoiceError, match="asks for cloud providers"):
        build_providers(settings, profile)


async def test_call_metadata_goes_with_the_segments(tmp_path: Path) -> None:
    chat = FakeChat()
    box = Outbox(outbox_path(tmp_path, "job-m"))
    sender = OutboxSender(
        box, chat, initial_backoff=0.01, max_backoff=0.02, call_metadata={"providers": "offline"}
    )
    sender.start()
    box.put("c1", Segment("job-m:user:0", "user", "hello", final=True))
    sender.notify()
    assert await sender.flush(5)
    await sender.aclose()
    box.close()
    assert chat.call_metadata == {"providers": "offline"}
