"""The voice worker's outbox metrics follow a chat_svc outage: turns pile up and age, then drain.

Read from the process's Prometheus registry, exactly what the worker's /metrics endpoint serves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.support.eventually import eventually
from tests.voice.test_outbox import FakeChat, seg
from voice_worker.outbox import Outbox
from voice_worker.sender import OutboxSender

pytestmark = pytest.mark.unit


def _value(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    return 0.0 if value is None else value


async def test_outbox_depth_age_and_delivery_latency_through_an_outage(tmp_path: Path) -> None:
    delivered_before = _value("syntera_voice_transcript_delivery_seconds_count")
    chat = FakeChat()
    chat.up = False
    box = Outbox(tmp_path / "m.outbox.sqlite")
    sender = OutboxSender(box, chat, initial_backoff=0.01, max_backoff=0.05)
    sender.start()
    for i in range(3):
        box.put("c1", seg(f"m{i}", f"turn {i}"))
        sender.notify()
    assert not await sender.flush(0.3)
    assert _value("syntera_voice_outbox_pending") >= 3
    assert _value("syntera_voice_outbox_oldest_age_seconds") >= 0.2

    chat.up = True
    assert await sender.flush(2.0)
    # The sender's loop notes the empty outbox after its last send. (The registry sums every outbox
    # in the process; this one's share is now nothing.)
    await eventually(lambda: sender.pending == 0 and sender.pending_since is None, within=2.0, interval=0.01)
    assert _value("syntera_voice_transcript_delivery_seconds_count") - delivered_before == 3
    # Each turn waited out the outage: its latency includes the retries.
    assert _value("syntera_voice_transcript_delivery_seconds_sum") >= 3 * 0.2
    await sender.aclose()
    box.close()
