"""A throwaway store + agent_svc stand-in + chat_svc process for the chat_svc benchmarks."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.chat_svc.processes import address, chat_process, wait_serving
from tests.chat_svc.support import FakeAgentSvc, running_fake_agent
from tests.conftest import Store


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@asynccontextmanager
async def chat_mesh() -> AsyncIterator[str]:
    """Yields the address of a serving chat_svc on its own embedded store."""
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as folder:
        base = Path(folder)
        store = Store(base / "store", base / "store.log")
        store.start()
        try:
            async with running_fake_agent(FakeAgentSvc()) as agent_port:
                chat = chat_process(base, "chat", store.uri, "bench", f"127.0.0.1:{agent_port}").start()
                try:
                    await wait_serving(chat)
                    yield address(chat)
                finally:
                    chat.stop()
        finally:
            store.stop()
